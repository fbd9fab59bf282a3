/* LD_PRELOAD shim for benchmarks: every fsync, fdatasync and syncfs sleeps SLOW_FSYNC_MS
 * milliseconds after the real call, modelling a slow SD card's cache flush for ANY build of
 * veriframe (used to measure the pre-group-commit code, which has no --fsync-delay-ms seam).
 *
 *   cc -O2 -shared -fPIC -o /tmp/slow_fsync.so tools/slow_fsync.c -ldl
 *   SLOW_FSYNC_MS=20 LD_PRELOAD=/tmp/slow_fsync.so veriframe bench-seal --json
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow(void) {
    const char *ms = getenv("SLOW_FSYNC_MS");
    long v = ms ? atol(ms) : 0;
    if (v > 0) {
        struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

#define WRAP(name)                                                   \
    int name(int fd) {                                               \
        static int (*real)(int);                                     \
        if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, #name);     \
        int r = real(fd);                                            \
        slow();                                                      \
        return r;                                                    \
    }

WRAP(fsync)
WRAP(fdatasync)
WRAP(syncfs)
