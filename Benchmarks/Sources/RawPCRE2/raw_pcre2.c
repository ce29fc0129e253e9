#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "raw_pcre2.h"

struct raw_pcre2 {
    pcre2_code *code;
    pcre2_match_data *match_data;
};

raw_pcre2 *raw_pcre2_compile(const char *pattern) {
    int error;
    PCRE2_SIZE offset;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, strlen(pattern), 0, &error, &offset, NULL);
    if (code == NULL) return NULL;
    if (pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0) {
        pcre2_code_free(code);
        return NULL;
    }
    raw_pcre2 *regex = malloc(sizeof *regex);
    regex->code = code;
    regex->match_data = pcre2_match_data_create_from_pattern(code, NULL);
    return regex;
}

int raw_pcre2_match(raw_pcre2 *regex, const unsigned char *subject, size_t length) {
    return pcre2_jit_match(regex->code, subject, length, 0, 0, regex->match_data, NULL);
}

void raw_pcre2_free(raw_pcre2 *regex) {
    pcre2_match_data_free(regex->match_data);
    pcre2_code_free(regex->code);
    free(regex);
}
