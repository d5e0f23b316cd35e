/*
 * dlopen_cost — how long does loading a PAM module take?
 *
 * dlopen(PATH, RTLD_NOW) + dlclose() N times, as libpam does once per
 * pam_start/pam_end, and print the median (and first, p90) time in
 * microseconds and the size of the file.  libpam is linked in (and
 * referenced) so that modules which leave pam_* symbols to the application
 * resolve the way they do inside a real PAM application.
 *
 * Build:  cc -O2 -Wall -Wextra -o dlopen_cost tests/bench/dlopen_cost.c -lpam -ldl
 * Usage:  dlopen_cost PATH [N]      (N defaults to 200)
 * Output: one line of key=value pairs:
 *   path=P n=N size_bytes=S first_us=F median_us=M p90_us=Q resident_after_close=yes|no
 * resident_after_close=yes means dlclose() did not unload the object (it is
 * marked NODELETE, e.g. by thread-local destructors), so later dlopen()s were
 * only reference-count increments.
 * Exit: 0 ok, 1 dlopen failed, 2 usage.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include <security/pam_appl.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *path;
    long n = 200, i;
    uint64_t *v, first;
    struct stat sb;
    int resident = 0;
    void *h;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: dlopen_cost PATH [N]\n");
        return 2;
    }
    path = argv[1];
    if (argc == 3) {
        n = strtol(argv[2], NULL, 10);
        if (n < 1 || n > 1000000) {
            fprintf(stderr, "dlopen_cost: bad N\n");
            return 2;
        }
    }
    if (stat(path, &sb) != 0) {
        perror(path);
        return 1;
    }
    /* keep libpam really loaded, as in any PAM application */
    if (pam_strerror(NULL, PAM_SUCCESS) == NULL)
        return 1;

    v = malloc((size_t)n * sizeof *v);
    if (!v)
        return 1;
    for (i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        h = dlopen(path, RTLD_NOW);
        if (!h) {
            fprintf(stderr, "dlopen_cost: %s\n", dlerror());
            return 1;
        }
        dlclose(h);
        v[i] = (now_ns() - t0) / 1000u;
        if (i == 0) {
            h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
            if (h) {
                resident = 1;
                dlclose(h);
            }
        }
    }
    first = v[0];
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    printf("path=%s n=%ld size_bytes=%lld first_us=%llu median_us=%llu p90_us=%llu "
           "resident_after_close=%s\n",
           path, n, (long long)sb.st_size, (unsigned long long)first,
           (unsigned long long)v[(size_t)(n - 1) / 2],
           (unsigned long long)v[(size_t)((double)(n - 1) * 0.9)], resident ? "yes" : "no");
    free(v);
    return 0;
}
