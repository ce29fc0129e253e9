#ifndef LOGPIPE_CPCRE2_SHIM_H
#define LOGPIPE_CPCRE2_SHIM_H

// pcre2.h serves three code-unit widths; log lines are bytes, so LogPipe uses
// the 8-bit library (libpcre2-8). The width must be set before the include.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#endif
