/*
 * pam_drive — run whole login attempts in-process through the real libpam.
 *
 * Each attempt: pam_start_confdir(service, user, &conv, confdir, &pamh),
 * pam_set_item(PAM_RHOST/PAM_RUSER/PAM_TTY) when given, pam_authenticate(),
 * then (with --acct, and only when authentication succeeded) pam_acct_mgmt(),
 * then pam_end().  No pam_wrapper is needed; users normally come from
 * nss_wrapper (LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD=... NSS_WRAPPER_GROUP=...).
 *
 * Build:  cc -O2 -Wall -Wextra -o target/pam_drive tests/driver/pam_drive.c -lpam
 * Usage:  pam_drive --help
 *
 * Exit status: 0 when the attempts ran (whatever PAM answered), 1 on a
 * system error (fork, memory), 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <security/pam_appl.h>

#define NCODES 32          /* PAM_SUCCESS .. PAM_INCOMPLETE */
#define CODE_NOT_CALLED -1 /* acct_mgmt not called */
#define CODE_START_FAILED -2

static const char *const code_names[NCODES] = {
    "PAM_SUCCESS",          "PAM_OPEN_ERR",          "PAM_SYMBOL_ERR",
    "PAM_SERVICE_ERR",      "PAM_SYSTEM_ERR",        "PAM_BUF_ERR",
    "PAM_PERM_DENIED",      "PAM_AUTH_ERR",          "PAM_CRED_INSUFFICIENT",
    "PAM_AUTHINFO_UNAVAIL", "PAM_USER_UNKNOWN",      "PAM_MAXTRIES",
    "PAM_NEW_AUTHTOK_REQD", "PAM_ACCT_EXPIRED",      "PAM_SESSION_ERR",
    "PAM_CRED_UNAVAIL",     "PAM_CRED_EXPIRED",      "PAM_CRED_ERR",
    "PAM_NO_MODULE_DATA",   "PAM_CONV_ERR",          "PAM_AUTHTOK_ERR",
    "PAM_AUTHTOK_RECOVERY_ERR", "PAM_AUTHTOK_LOCK_BUSY",
    "PAM_AUTHTOK_DISABLE_AGING", "PAM_TRY_AGAIN",    "PAM_IGNORE",
    "PAM_ABORT",            "PAM_AUTHTOK_EXPIRED",   "PAM_MODULE_UNKNOWN",
    "PAM_BAD_ITEM",         "PAM_CONV_AGAIN",        "PAM_INCOMPLETE",
};

static const char *code_name(int rc)
{
    static char buf[32];
    if (rc == CODE_NOT_CALLED)
        return "-";
    if (rc == CODE_START_FAILED)
        return "START_FAILED";
    if (rc >= 0 && rc < NCODES)
        return code_names[rc];
    snprintf(buf, sizeof buf, "PAM_%d", rc);
    return buf;
}

/* ---------------------------------------------------------------- options */

#define MAX_ENV 16

struct opts {
    const char *confdir, *service, *user, *password;
    const char *rhost, *ruser, *tty;
    const char *env[MAX_ENV];
    const char *samples;
    int nenv;
    long count, procs, users, warmup;
    int acct, json, quiet, fail_delay, silent;
};

static struct opts O = {.count = 1, .procs = 1, .users = 0, .warmup = 0};

/* ------------------------------------------------------------ attempt data */

enum { CLS_SUCCESS = 0, CLS_FAILURE = 1, CLS_OTHER = 2, NCLS = 3 };
static const char *const cls_names[NCLS] = {"auth_success", "auth_failure", "other"};

struct record {
    uint64_t us;      /* latency of the whole attempt, microseconds */
    int16_t auth_rc;  /* pam_authenticate (or CODE_START_FAILED) */
    int16_t acct_rc;  /* pam_acct_mgmt or CODE_NOT_CALLED */
    int16_t start_rc; /* pam_start_confdir */
    uint16_t n_info, n_error, n_prompt;
    uint8_t cls;
};

struct proc_times {
    uint64_t start_ns, end_ns;
};

/* messages collected for the single-attempt report */
#define MAX_MSGS 64
struct conv_state {
    const char *password;
    int collect;
    int nmsg;
    int kind[MAX_MSGS]; /* PAM_TEXT_INFO, PAM_ERROR_MSG, PAM_PROMPT_ECHO_* */
    char *text[MAX_MSGS];
    unsigned n_info, n_error, n_prompt;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void remember(struct conv_state *st, int kind, const char *msg)
{
    if (!st->collect || st->nmsg >= MAX_MSGS)
        return;
    st->kind[st->nmsg] = kind;
    st->text[st->nmsg] = strdup(msg ? msg : "");
    st->nmsg++;
}

static int conv_fn(int num_msg, const struct pam_message **msg,
                   struct pam_response **resp, void *appdata)
{
    struct conv_state *st = appdata;
    struct pam_response *r;
    int i;

    if (num_msg <= 0 || num_msg > PAM_MAX_NUM_MSG)
        return PAM_CONV_ERR;
    r = calloc((size_t)num_msg, sizeof *r);
    if (!r)
        return PAM_BUF_ERR;
    for (i = 0; i < num_msg; i++) {
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
        case PAM_PROMPT_ECHO_ON:
            st->n_prompt++;
            remember(st, msg[i]->msg_style, msg[i]->msg);
            r[i].resp = strdup(st->password);
            if (!r[i].resp)
                goto fail;
            break;
        case PAM_TEXT_INFO:
            st->n_info++;
            remember(st, PAM_TEXT_INFO, msg[i]->msg);
            break;
        case PAM_ERROR_MSG:
            st->n_error++;
            remember(st, PAM_ERROR_MSG, msg[i]->msg);
            break;
        default:
            goto fail;
        }
    }
    *resp = r;
    return PAM_SUCCESS;
fail:
    for (i = 0; i < num_msg; i++)
        free(r[i].resp);
    free(r);
    return PAM_CONV_ERR;
}

/* libpam calls this instead of sleeping when a module asked for a failure delay */
static void no_fail_delay(int retval, unsigned usec_delay, void *appdata)
{
    (void)retval;
    (void)usec_delay;
    (void)appdata;
}

/* copy s with every "%d" replaced by n */
static char *subst(const char *s, long n)
{
    char num[24];
    size_t len = strlen(s), nl, cnt = 0, i, o = 0;
    char *out;

    nl = (size_t)snprintf(num, sizeof num, "%ld", n);
    for (i = 0; i + 1 < len; i++)
        if (s[i] == '%' && s[i + 1] == 'd')
            cnt++;
    out = malloc(len + cnt * nl + 1);
    if (!out) {
        perror("pam_drive: malloc");
        exit(1);
    }
    for (i = 0; i < len; i++) {
        if (s[i] == '%' && i + 1 < len && s[i + 1] == 'd') {
            memcpy(out + o, num, nl);
            o += nl;
            i++;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static int classify(int auth_rc)
{
    switch (auth_rc) {
    case PAM_SUCCESS:
        return CLS_SUCCESS;
    case PAM_AUTH_ERR:
    case PAM_USER_UNKNOWN:
    case PAM_MAXTRIES:
    case PAM_PERM_DENIED:
    case PAM_CRED_INSUFFICIENT:
        return CLS_FAILURE;
    default:
        return CLS_OTHER;
    }
}

/* one complete login attempt; n is the global attempt number */
static void attempt(long n, struct record *rec, struct conv_state *st)
{
    pam_handle_t *pamh = NULL;
    struct pam_conv conv = {conv_fn, st};
    long uidx = O.users > 0 ? n % O.users : n;
    char *user = subst(O.user, uidx);
    char *pass = subst(O.password, uidx);
    int flags = O.silent ? PAM_SILENT : 0;
    int rc, auth_rc, acct_rc = CODE_NOT_CALLED, i;
    uint64_t t0;

    st->password = pass;
    st->n_info = st->n_error = st->n_prompt = 0;

    t0 = now_ns();
    rc = pam_start_confdir(O.service, user, &conv, O.confdir, &pamh);
    rec->start_rc = (int16_t)rc;
    if (rc != PAM_SUCCESS) {
        auth_rc = CODE_START_FAILED;
        if (pamh)
            pam_end(pamh, rc);
        goto done;
    }
    if (O.rhost)
        pam_set_item(pamh, PAM_RHOST, O.rhost);
    if (O.ruser)
        pam_set_item(pamh, PAM_RUSER, O.ruser);
    if (O.tty)
        pam_set_item(pamh, PAM_TTY, O.tty);
    if (!O.fail_delay)
        pam_set_item(pamh, PAM_FAIL_DELAY, (const void *)no_fail_delay);
    for (i = 0; i < O.nenv; i++)
        pam_putenv(pamh, O.env[i]);

    auth_rc = pam_authenticate(pamh, flags);
    rc = auth_rc;
    if (auth_rc == PAM_SUCCESS && O.acct) {
        acct_rc = pam_acct_mgmt(pamh, flags);
        rc = acct_rc;
    }
    pam_end(pamh, rc);
done:
    rec->us = (now_ns() - t0) / 1000u;
    rec->auth_rc = (int16_t)auth_rc;
    rec->acct_rc = (int16_t)acct_rc;
    rec->n_info = (uint16_t)st->n_info;
    rec->n_error = (uint16_t)st->n_error;
    rec->n_prompt = (uint16_t)st->n_prompt;
    rec->cls = (uint8_t)(auth_rc == CODE_START_FAILED ? CLS_OTHER : classify(auth_rc));
    free(user);
    free(pass);
}

/* ------------------------------------------------------------- statistics */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array */
static uint64_t pct(const uint64_t *v, size_t n, double p)
{
    size_t k;
    if (n == 0)
        return 0;
    k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

struct cls_stats {
    size_t count;
    uint64_t median, p90, p99, min, max;
    double mean;
};

static void stats_for(const struct record *recs, size_t n, int cls, struct cls_stats *out)
{
    uint64_t *v = malloc((n ? n : 1) * sizeof *v);
    size_t i, m = 0;
    double sum = 0;

    if (!v) {
        perror("pam_drive: malloc");
        exit(1);
    }
    for (i = 0; i < n; i++)
        if (cls < 0 || recs[i].cls == cls) {
            v[m++] = recs[i].us;
            sum += (double)recs[i].us;
        }
    qsort(v, m, sizeof *v, cmp_u64);
    out->count = m;
    out->median = pct(v, m, 50);
    out->p90 = pct(v, m, 90);
    out->p99 = pct(v, m, 99);
    out->min = m ? v[0] : 0;
    out->max = m ? v[m - 1] : 0;
    out->mean = m ? sum / (double)m : 0;
    free(v);
}

static void json_str(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    putchar('"');
    for (; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p < 0x20 || *p == 0x7f)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* counts of return codes: index rc+2 (so -2, -1 fit) */
#define CODE_SLOTS (NCODES + 2 + 1) /* last slot: out of range */
static size_t code_slot(int rc)
{
    if (rc >= CODE_START_FAILED && rc < NCODES)
        return (size_t)(rc + 2);
    return CODE_SLOTS - 1;
}
static int slot_code(size_t s)
{
    return (int)s - 2;
}

static void print_codes_text(const char *label, const size_t *cnt)
{
    size_t s;
    printf("%s:", label);
    for (s = 0; s < CODE_SLOTS; s++)
        if (cnt[s])
            printf(" %s=%zu", s == CODE_SLOTS - 1 ? "OUT_OF_RANGE" : code_name(slot_code(s)), cnt[s]);
    putchar('\n');
}

static void print_codes_json(const char *label, const size_t *cnt)
{
    size_t s;
    int first = 1;
    printf("\"%s\":{", label);
    for (s = 0; s < CODE_SLOTS; s++)
        if (cnt[s]) {
            printf("%s\"%s\":%zu", first ? "" : ",",
                   s == CODE_SLOTS - 1 ? "OUT_OF_RANGE" : code_name(slot_code(s)), cnt[s]);
            first = 0;
        }
    putchar('}');
}

static int write_samples(const struct record *recs, size_t n)
{
    FILE *f;
    size_t i;
    if (!O.samples)
        return 0;
    f = fopen(O.samples, "w");
    if (!f) {
        perror(O.samples);
        return -1;
    }
    for (i = 0; i < n; i++) {
        fprintf(f, "%llu %s %s", (unsigned long long)recs[i].us, cls_names[recs[i].cls],
                code_name(recs[i].auth_rc));
        fprintf(f, " %s\n", code_name(recs[i].acct_rc));
    }
    if (fclose(f) != 0) {
        perror(O.samples);
        return -1;
    }
    return 0;
}

static void report(const struct record *recs, size_t n, double wall_s)
{
    struct cls_stats cs[NCLS], all;
    size_t auth_cnt[CODE_SLOTS] = {0}, acct_cnt[CODE_SLOTS] = {0};
    size_t i, n_info = 0, n_error = 0, n_prompt = 0;
    double rate = wall_s > 0 ? (double)n / wall_s : 0;
    int c;

    for (c = 0; c < NCLS; c++)
        stats_for(recs, n, c, &cs[c]);
    stats_for(recs, n, -1, &all);
    for (i = 0; i < n; i++) {
        auth_cnt[code_slot(recs[i].auth_rc)]++;
        acct_cnt[code_slot(recs[i].acct_rc)]++;
        n_info += recs[i].n_info;
        n_error += recs[i].n_error;
        n_prompt += recs[i].n_prompt;
    }

    if (O.json) {
        printf("{\"service\":");
        json_str(O.service);
        printf(",\"attempts\":%zu,\"procs\":%ld,\"count\":%ld,\"users\":%ld,"
               "\"wall_s\":%.6f,\"attempts_per_s\":%.1f,\"classes\":{",
               n, O.procs, O.count, O.users, wall_s, rate);
        for (c = 0; c < NCLS; c++)
            printf("%s\"%s\":{\"count\":%zu,\"median_us\":%llu,\"p90_us\":%llu,"
                   "\"p99_us\":%llu,\"min_us\":%llu,\"max_us\":%llu,\"mean_us\":%.1f}",
                   c ? "," : "", cls_names[c], cs[c].count,
                   (unsigned long long)cs[c].median, (unsigned long long)cs[c].p90,
                   (unsigned long long)cs[c].p99, (unsigned long long)cs[c].min,
                   (unsigned long long)cs[c].max, cs[c].mean);
        printf("},\"all\":{\"count\":%zu,\"median_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,"
               "\"max_us\":%llu},",
               all.count, (unsigned long long)all.median, (unsigned long long)all.p90,
               (unsigned long long)all.p99, (unsigned long long)all.max);
        print_codes_json("authenticate", auth_cnt);
        putchar(',');
        print_codes_json("acct_mgmt", acct_cnt);
        printf(",\"messages\":{\"info\":%zu,\"error\":%zu,\"prompt\":%zu}}\n",
               n_info, n_error, n_prompt);
        return;
    }

    printf("service: %s  attempts: %zu (procs %ld x count %ld)%s\n", O.service, n,
           O.procs, O.count, O.acct ? "  with acct_mgmt" : "");
    printf("wall: %.3f s  rate: %.1f attempts/s\n", wall_s, rate);
    printf("%-13s %8s %10s %10s %10s\n", "class", "count", "median_us", "p90_us", "p99_us");
    for (c = 0; c < NCLS; c++)
        printf("%-13s %8zu %10llu %10llu %10llu\n", cls_names[c], cs[c].count,
               (unsigned long long)cs[c].median, (unsigned long long)cs[c].p90,
               (unsigned long long)cs[c].p99);
    print_codes_text("authenticate", auth_cnt);
    print_codes_text("acct_mgmt", acct_cnt);
    printf("messages: info=%zu error=%zu prompt=%zu\n", n_info, n_error, n_prompt);
}

/* --count 1 without --quiet: the verdicts and the messages */
static void report_single(const struct record *r, const struct conv_state *st)
{
    int i;
    if (O.json) {
        printf("{\"pam_start\":\"%s\",", code_name(r->start_rc));
        printf("\"authenticate\":\"%s\",", code_name(r->auth_rc));
        printf("\"acct_mgmt\":\"%s\",\"latency_us\":%llu,\"messages\":[",
               code_name(r->acct_rc), (unsigned long long)r->us);
        for (i = 0; i < st->nmsg; i++) {
            const char *k = st->kind[i] == PAM_TEXT_INFO   ? "info"
                            : st->kind[i] == PAM_ERROR_MSG ? "error"
                                                           : "prompt";
            printf("%s{\"kind\":\"%s\",\"text\":", i ? "," : "", k);
            json_str(st->text[i]);
            putchar('}');
        }
        printf("]}\n");
        return;
    }
    if (r->auth_rc == CODE_START_FAILED)
        fprintf(stderr, "pam_drive: pam_start_confdir: %s\n", code_name(r->start_rc));
    printf("authenticate=%s acct_mgmt=%s\n", code_name(r->auth_rc), code_name(r->acct_rc));
    for (i = 0; i < st->nmsg; i++) {
        const char *k = st->kind[i] == PAM_TEXT_INFO   ? "info"
                        : st->kind[i] == PAM_ERROR_MSG ? "error"
                                                       : "prompt";
        /* a multi-line message gives one prefixed line per line */
        const char *p = st->text[i];
        do {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            printf("%s: %.*s\n", k, len, p);
            p = nl ? nl + 1 : NULL;
        } while (p && *p);
    }
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
"usage: pam_drive --confdir DIR --service S --user U --password P [options]\n"
"  --confdir DIR    directory holding the PAM service files (pam_start_confdir)\n"
"  --service S      service name (file DIR/S)\n"
"  --user U         user name; every %%d is replaced by (attempt number mod --users)\n"
"  --password P     answer to every password prompt (%%d replaced the same way)\n"
"  --users M        modulus for %%d (default: no modulus)\n"
"  --rhost H --ruser R --tty T   set PAM_RHOST / PAM_RUSER / PAM_TTY (use a numeric\n"
"                   --rhost: libpam's audit record resolves a host name through DNS)\n"
"  --env NAME=VAL   pam_putenv before authenticating (repeatable, e.g. SSH_AUTH_INFO_0)\n"
"  --acct           call pam_acct_mgmt after a successful pam_authenticate\n"
"  --count N        attempts per process (default 1)\n"
"  --procs K        fork K processes running --count attempts each, started together\n"
"  --warmup N       attempts per process before the measured ones (not counted)\n"
"  --silent         pass PAM_SILENT\n"
"  --fail-delay     keep libpam's failure delay (default: the driver disables it\n"
"                   through PAM_FAIL_DELAY so only work is measured)\n"
"  --json           one JSON object instead of text\n"
"  --samples FILE   also write one line per measured attempt:\n"
"                   LATENCY_US CLASS AUTHENTICATE ACCT_MGMT (class and codes by name)\n"
"  --quiet          with --count 1: print the summary instead of the verdict lines\n"
"Single attempt (--count 1 --procs 1, no --quiet) prints\n"
"  authenticate=CODE acct_mgmt=CODE|-   then 'prompt: ', 'info: ', 'error: ' lines.\n"
"Classes: auth_success = pam_authenticate PAM_SUCCESS; auth_failure = PAM_AUTH_ERR,\n"
"PAM_USER_UNKNOWN, PAM_MAXTRIES, PAM_PERM_DENIED, PAM_CRED_INSUFFICIENT; other = rest.\n"
"Exit 0 when the attempts ran, whatever PAM answered; 1 system error; 2 usage.\n");
}

static long parse_long(const char *s, const char *name, long min)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min) {
        fprintf(stderr, "pam_drive: bad value for --%s: %s\n", name, s);
        exit(2);
    }
    return v;
}

static void run_proc(long p, struct record *out, int ready_fd, int barrier_fd,
                     struct proc_times *pt)
{
    struct conv_state st;
    struct record scratch;
    long i;
    char c;

    memset(&st, 0, sizeof st);
    for (i = 0; i < O.warmup; i++)
        attempt(i * O.procs + p, &scratch, &st);
    if (ready_fd >= 0) {
        if (write(ready_fd, "r", 1) != 1)
            _exit(1);
        close(ready_fd);
    }
    if (barrier_fd >= 0) {
        while (read(barrier_fd, &c, 1) < 0 && errno == EINTR)
            ;
        close(barrier_fd);
    }
    pt->start_ns = now_ns();
    for (i = 0; i < O.count; i++)
        attempt(i * O.procs + p, &out[i], &st);
    pt->end_ns = now_ns();
}

int main(int argc, char **argv)
{
    enum { OPT_USERS = 256, OPT_WARMUP, OPT_ENV, OPT_FAILDELAY, OPT_SILENT, OPT_SAMPLES };
    static const struct option lo[] = {
        {"confdir", required_argument, 0, 'c'},
        {"service", required_argument, 0, 's'},
        {"user", required_argument, 0, 'u'},
        {"password", required_argument, 0, 'p'},
        {"rhost", required_argument, 0, 'r'},
        {"ruser", required_argument, 0, 'R'},
        {"tty", required_argument, 0, 't'},
        {"count", required_argument, 0, 'n'},
        {"procs", required_argument, 0, 'k'},
        {"users", required_argument, 0, OPT_USERS},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"env", required_argument, 0, OPT_ENV},
        {"fail-delay", no_argument, 0, OPT_FAILDELAY},
        {"silent", no_argument, 0, OPT_SILENT},
        {"samples", required_argument, 0, OPT_SAMPLES},
        {"acct", no_argument, 0, 'a'},
        {"json", no_argument, 0, 'j'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct record *recs;
    struct proc_times *pt;
    size_t total;
    int ch;

    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': O.confdir = optarg; break;
        case 's': O.service = optarg; break;
        case 'u': O.user = optarg; break;
        case 'p': O.password = optarg; break;
        case 'r': O.rhost = optarg; break;
        case 'R': O.ruser = optarg; break;
        case 't': O.tty = optarg; break;
        case 'n': O.count = parse_long(optarg, "count", 1); break;
        case 'k': O.procs = parse_long(optarg, "procs", 1); break;
        case OPT_USERS: O.users = parse_long(optarg, "users", 1); break;
        case OPT_WARMUP: O.warmup = parse_long(optarg, "warmup", 0); break;
        case OPT_ENV:
            if (O.nenv >= MAX_ENV || !strchr(optarg, '=')) {
                fprintf(stderr, "pam_drive: --env wants NAME=VALUE (at most %d)\n", MAX_ENV);
                return 2;
            }
            O.env[O.nenv++] = optarg;
            break;
        case OPT_FAILDELAY: O.fail_delay = 1; break;
        case OPT_SILENT: O.silent = 1; break;
        case OPT_SAMPLES: O.samples = optarg; break;
        case 'a': O.acct = 1; break;
        case 'j': O.json = 1; break;
        case 'q': O.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !O.confdir || !O.service || !O.user || !O.password) {
        fprintf(stderr, "pam_drive: --confdir, --service, --user and --password are required\n");
        usage(stderr);
        return 2;
    }
    if (O.procs > 1024 || O.count > 100000000L / O.procs) {
        fprintf(stderr, "pam_drive: too many attempts\n");
        return 2;
    }

    total = (size_t)O.count * (size_t)O.procs;
    /* shared with the children: they fill in their own slices */
    recs = mmap(NULL, total * sizeof *recs + (size_t)O.procs * sizeof *pt,
                PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (recs == MAP_FAILED) {
        perror("pam_drive: mmap");
        return 1;
    }
    pt = (struct proc_times *)(void *)(recs + total);
    fflush(stdout);

    if (O.procs == 1) {
        struct conv_state st;
        memset(&st, 0, sizeof st);
        if (O.count == 1 && !O.quiet) {
            struct record scratch;
            long i;
            for (i = 0; i < O.warmup; i++)
                attempt(i, &scratch, &st);
            st.collect = 1;
            attempt(0, &recs[0], &st);
            report_single(&recs[0], &st);
            for (i = 0; i < st.nmsg; i++)
                free(st.text[i]);
            return 0;
        }
        run_proc(0, recs, -1, -1, &pt[0]);
        report(recs, total, (double)(pt[0].end_ns - pt[0].start_ns) / 1e9);
        return write_samples(recs, total) ? 1 : 0;
    } else {
        int ready[2], barrier[2];
        long p, started = 0;
        uint64_t t0, t_end = 0;
        char buf[64];
        int failed = 0;
        size_t got = 0;

        if (pipe(ready) < 0 || pipe(barrier) < 0) {
            perror("pam_drive: pipe");
            return 1;
        }
        for (p = 0; p < O.procs; p++) {
            pid_t pid = fork();
            if (pid < 0) {
                perror("pam_drive: fork");
                failed = 1;
                break;
            }
            if (pid == 0) {
                close(ready[0]);
                close(barrier[1]);
                run_proc(p, recs + (size_t)p * (size_t)O.count, ready[1], barrier[0], &pt[p]);
                _exit(0);
            }
            started++;
        }
        close(ready[1]);
        close(barrier[0]);
        /* wait until every child finished its warm-up, then release them all */
        while (got < (size_t)started) {
            ssize_t r = read(ready[0], buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        t0 = now_ns();
        close(barrier[1]); /* EOF releases every child at once */
        for (;;) {
            int status;
            pid_t w = wait(&status);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "pam_drive: a worker process died (status %d)\n", status);
                failed = 1;
            }
        }
        if (failed)
            return 1;
        for (p = 0; p < O.procs; p++)
            if (pt[p].end_ns > t_end)
                t_end = pt[p].end_ns;
        report(recs, total, (double)(t_end - t0) / 1e9);
        return write_samples(recs, total) ? 1 : 0;
    }
}
