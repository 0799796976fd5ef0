/* The pod sandbox process of the real node (`up --kubelet`): holds the pod's namespaces open and
 * does nothing else. Sleeps until SIGTERM or SIGINT, then exits 0; reaps orphans as PID 1.
 * Built with `gcc -static` into a one-file image (no registry is reachable here). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {.sa_handler = stop}, child = {.sa_handler = reap};
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGCHLD, &child, NULL);
    for (;;)
        pause();
    return EXIT_SUCCESS;
}
