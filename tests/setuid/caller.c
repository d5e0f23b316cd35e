/*
 * caller — a PAM application for tests/setuid.rs, standing in for a
 * set-user-ID program such as su: one login (pam_authenticate, then
 * pam_acct_mgmt when that succeeded) of USER on SERVICE from RHOST, with
 * PASSWORD answered to every prompt; messages go to stdout. Then it prints
 * the process state that its own caller chose and the module must have put
 * back: the file-size and open-file limits, SIGXFSZ's disposition and the
 * umask.
 *
 * Build:  cc -Wall -Wextra -o caller tests/setuid/caller.c -lpam
 * Usage:  caller SERVICE USER PASSWORD RHOST
 * Output: the messages, then one line
 *         auth=N acct=N fsize=CUR/MAX nofile=CUR/MAX xfsz=ign|dfl|other umask=NNNN
 *         (N a PAM code, -1 when not called; inf for RLIM_INFINITY).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <security/pam_appl.h>

static const char *password;

static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
    (void)data;
    struct pam_response *r = calloc((size_t)n, sizeof *r);
    if (!r)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
        case PAM_PROMPT_ECHO_ON:
            r[i].resp = strdup(password);
            break;
        default:
            printf("message: %s\n", msg[i]->msg);
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

static void limit(const char *name, int res)
{
    struct rlimit r;
    getrlimit(res, &r);
    printf(" %s=", name);
    if (r.rlim_cur == RLIM_INFINITY)
        printf("inf/");
    else
        printf("%llu/", (unsigned long long)r.rlim_cur);
    if (r.rlim_max == RLIM_INFINITY)
        printf("inf");
    else
        printf("%llu", (unsigned long long)r.rlim_max);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: caller SERVICE USER PASSWORD RHOST\n");
        return 2;
    }
    password = argv[3];
    struct pam_conv c = { conv, NULL };
    pam_handle_t *h = NULL;
    if (pam_start(argv[1], argv[2], &c, &h) != PAM_SUCCESS)
        return 1;
    pam_set_item(h, PAM_RHOST, argv[4]);
    int auth = pam_authenticate(h, 0);
    int acct = auth == PAM_SUCCESS ? pam_acct_mgmt(h, 0) : -1;
    pam_end(h, auth == PAM_SUCCESS ? acct : auth);

    struct sigaction sa;
    sigaction(SIGXFSZ, NULL, &sa);
    mode_t mask = umask(0);
    printf("auth=%d acct=%d", auth, acct);
    limit("fsize", RLIMIT_FSIZE);
    limit("nofile", RLIMIT_NOFILE);
    printf(" xfsz=%s umask=%04o\n",
           sa.sa_handler == SIG_IGN ? "ign" : sa.sa_handler == SIG_DFL ? "dfl" : "other", (unsigned)mask);
    return 0;
}
