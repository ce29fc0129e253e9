// The baseline for the regex benchmark: PCRE2 called from C as a C program
// would, with no Swift wrapper in between.
#ifndef RAW_PCRE2_H
#define RAW_PCRE2_H
#include <stddef.h>

typedef struct raw_pcre2 raw_pcre2;

/// Compiles `pattern` with JIT; NULL if it does not compile.
raw_pcre2 *raw_pcre2_compile(const char *pattern);
/// pcre2_jit_match on `length` bytes: > 0 on a match, PCRE2_ERROR_NOMATCH (-1) otherwise.
int raw_pcre2_match(raw_pcre2 *regex, const unsigned char *subject, size_t length);
void raw_pcre2_free(raw_pcre2 *regex);

#endif
