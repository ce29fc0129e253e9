// The cheapest possible acked JetStream publisher, for scripts/bench-jetstream.sh:
// every PUB frame is built before the clock starts, then written in chunks of
// 1000 with at most WINDOW messages awaiting their acknowledgement; a reader
// thread counts the acknowledgements ('{' per reply). What it measures is how
// fast the server alone can store and acknowledge, i.e. the ceiling of any
// client on this machine.
//
//   jetstream-floor PORT CORPUS WINDOW
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static atomic_long acked;
static long total;
static int sock;

static void *count_acks(void *unused) {
    (void)unused;
    static char bytes[1 << 20];
    long replies = 0;
    while (replies < total) {
        ssize_t n = read(sock, bytes, sizeof bytes);
        if (n <= 0) {
            perror("jetstream-floor: read");
            exit(1);
        }
        for (ssize_t i = 0; i < n; i++) replies += bytes[i] == '{';
        atomic_store(&acked, replies);
    }
    return NULL;
}

static void write_all(const char *bytes, size_t count) {
    while (count > 0) {
        ssize_t n = write(sock, bytes, count);
        if (n <= 0) {
            perror("jetstream-floor: write");
            exit(1);
        }
        bytes += n;
        count -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: jetstream-floor PORT CORPUS WINDOW\n");
        return 2;
    }
    long window = atol(argv[3]);
    FILE *file = fopen(argv[2], "rb");
    if (!file) {
        perror(argv[2]);
        return 1;
    }
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *input = malloc((size_t)size);
    if (fread(input, 1, (size_t)size, file) != (size_t)size) return 1;
    fclose(file);

    size_t lines = 0;
    for (long i = 0; i < size; i++) lines += input[i] == '\n';
    char *frames = malloc((size_t)size + (lines + 1) * 64);
    size_t *ends = malloc(sizeof(size_t) * (lines + 1));
    size_t length = 0;
    for (char *line = input, *end = input + size; line < end; total++) {
        char *newline = memchr(line, '\n', (size_t)(end - line));
        if (!newline) newline = end;
        size_t count = (size_t)(newline - line);
        length += (size_t)sprintf(frames + length, "PUB logs.p%ld.h%ld _R.%ld.%ld %zu\r\n", total % 8, total % 40,
                                  (long)getpid(), total, count);
        memcpy(frames + length, line, count);
        length += count;
        memcpy(frames + length, "\r\n", 2);
        length += 2;
        ends[total] = length;
        line = newline + 1;
    }

    sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(sock, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("jetstream-floor: connect");
        return 1;
    }
    char greeting[4096];
    if (read(sock, greeting, sizeof greeting) <= 0) return 1;  // INFO
    // Replies go to this process only: two clients at once must not count
    // each other's acknowledgements.
    char hello[256];
    snprintf(hello, sizeof hello, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _R.%ld.> 1\r\nPING\r\n",
             (long)getpid());
    write_all(hello, strlen(hello));
    if (read(sock, greeting, sizeof greeting) <= 0) return 1;  // PONG

    struct timespec start, stop;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_t reader;
    pthread_create(&reader, NULL, count_acks, NULL);
    long sent = 0;
    size_t written = 0;
    while (sent < total) {
        long limit = atomic_load(&acked) + window;
        if (sent >= limit) {
            struct timespec pause = {0, 20000};
            nanosleep(&pause, NULL);
            continue;
        }
        long upto = limit < total ? limit : total;
        if (upto - sent > 1000) upto = sent + 1000;
        write_all(frames + written, ends[upto - 1] - written);
        written = ends[upto - 1];
        sent = upto;
    }
    pthread_join(reader, NULL);
    clock_gettime(CLOCK_MONOTONIC, &stop);
    fprintf(stderr, "%ld acknowledged in %.3f s\n", total,
            (double)(stop.tv_sec - start.tv_sec) + (double)(stop.tv_nsec - start.tv_nsec) / 1e9);
    return 0;
}
