// test_header_cxx.cpp - test_header.c compiled as C++11 (pedantic, -Werror): the public headers
// must stay valid C++ with C linkage.
#include "test_header.c"
