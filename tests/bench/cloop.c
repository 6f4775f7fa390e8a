/* The plain C baseline of the cpu_loop workload: JOBS sums of i + x for i < N, run by PROCS
 * processes (jobs dealt round robin), the loop written exactly as workers/ops/num_cpu.c writes
 * it (an opaque accumulator: one dependent add per step, nothing folded or vectorised).
 *
 *   cloop N JOBS PROCS      prints the sum of the first job
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline, aligned(64))) static uint64_t cpu_loop_sum(uint64_t x, uint64_t n)
{
    uint64_t acc = 0;
    const uint64_t end = x + n;
    for (uint64_t t = x; t != end; t++) {
        acc += t;
        __asm__ volatile("" : "+r"(acc));
    }
    return acc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: cloop N JOBS PROCS\n");
        return 2;
    }
    uint64_t n = strtoull(argv[1], NULL, 10);
    int jobs = (int)strtol(argv[2], NULL, 10), procs = (int)strtol(argv[3], NULL, 10);
    for (int p = 0; p < procs; p++) {
        pid_t pid = fork();
        if (pid == 0) {
            uint64_t first = 0;
            for (int j = p; j < jobs; j += procs) {
                uint64_t s = cpu_loop_sum((uint64_t)j, n);
                if (j == p) {
                    first = s;
                }
            }
            if (p == 0) {
                printf("%llu\n", (unsigned long long)first);
            }
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    return 0;
}
