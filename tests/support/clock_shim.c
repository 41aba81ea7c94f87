/* Loaded before libfaketime for the clock-step tests (tests/support/clock_step.py).
 *
 * With FAKETIME_DONT_FAKE_MONOTONIC=1 (a step of the wall clock leaves the monotonic clock
 * alone, as a real step does), libfaketime 0.9.10 still shifts the absolute CLOCK_MONOTONIC
 * deadline of clock_nanosleep() by the wall-clock offset. Python 3.11's time.sleep() sleeps
 * that way, and the kernel refuses the negative deadline with EINVAL. Monotonic sleeps go
 * straight to the kernel here; every other clock goes on to libfaketime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *request,
                    struct timespec *remain) {
    static sleep_fn next;
    if (clock == CLOCK_MONOTONIC) {
        /* clock_nanosleep returns the error number; the raw syscall sets errno. */
        return syscall(SYS_clock_nanosleep, clock, flags, request, remain) == 0 ? 0 : errno;
    }
    if (next == NULL) {
        next = (sleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    }
    return next(clock, flags, request, remain);
}
