/*
 * sixpn.dns._fastpath: the DNS server's UDP loop for cached answers, in C.
 *
 * Why: the UDP path is the hot path (ARCHITECTURE habit 10) and SPEC 9 wants no more CPU per
 * `.internal` query than Unbound. With whole responses cached, the measured remainder
 * (bench/README.md, Results, suggestion 5) was the stdlib socket glue: a `recvfrom` and a
 * `sendto` per datagram, the source formatted as text, and the interpreter around them. Here
 * `recvmmsg` takes batches, hits are answered with one `sendmmsg` per batch, until the socket
 * is empty or the budget spent; only misses reach Python, once per call.
 *
 * Kept identical to the Python path (DnsServer._drain, _answer, _keep, network_of):
 * - 6PN sources are fdaa::/16; the network ID is bytes 2-5 of the address, big-endian;
 * - the cache is the dict the Python path fills: (network ID, query[2:]) -> response[2:]; a hit
 *   is answered with query[:2] + the value, counted as rcodes[value[1] & 0x0F] += 1;
 * - the rest (not 6PN, not cached, under 12 bytes) goes to Python as (data, address), exactly
 *   as socket.recvfrom(4096) returns them; a failed send counts as dropped, and so does a
 *   datagram over 4096 bytes (MSG_TRUNC), which Python would have read cut short.
 * The GIL stays held while draining: those syscalls never wait, and it guards the static
 * buffers (a re-entrant call is refused). serve() waits for the socket with the GIL released,
 * for the server's UDP threads. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 64      /* datagrams per recvmmsg/sendmmsg */
#define MAX_DATAGRAM 4096 /* as the Python path's recvfrom(4096) */

static unsigned char rbuf[MAX_BATCH][MAX_DATAGRAM];
static struct sockaddr_storage rname[MAX_BATCH];
static struct iovec riov[MAX_BATCH];
static struct mmsghdr rmsg[MAX_BATCH];
static struct iovec siov[MAX_BATCH][2];
static struct mmsghdr smsg[MAX_BATCH];
static PyObject *held[MAX_BATCH]; /* the cached answers being sent, referenced until sent */
static int busy;

struct state { /* one call's arguments and results */
    PyObject *responses, *misses, *net_obj;
    long long any_net; /* tests only: every source counts as this network; else -1 */
    unsigned long long last_net;
    Py_ssize_t dropped, per_rcode[16];
};

/* The source address as socket.recvfrom gives it: (host, port[, flowinfo, scope_id]). */
static PyObject *
address_of(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;
    if (ss->ss_family == AF_INET6 && inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof host))
        return Py_BuildValue("(siII)", host, ntohs(a6->sin6_port), ntohl(a6->sin6_flowinfo),
                             a6->sin6_scope_id);
    if (ss->ss_family == AF_INET && inet_ntop(AF_INET, &a4->sin_addr, host, sizeof host))
        return Py_BuildValue("(si)", host, ntohs(a4->sin_port));
    PyErr_SetString(PyExc_OSError, "unexpected source address");
    return NULL;
}

/* Receive up to `want` datagrams without waiting; EINTR retried, other errors end the batch
 * (a pending socket error is consumed by the failing call; the next wake-up goes on). */
static int
receive(int fd, int want)
{
    for (int i = 0; i < want; i++) /* the rest was set up once, in PyInit__fastpath */
        rmsg[i].msg_hdr.msg_namelen = sizeof rname[i];
    int n;
    do
        n = recvmmsg(fd, rmsg, (unsigned int)want, MSG_DONTWAIT, NULL);
    while (n < 0 && errno == EINTR);
    return n < 0 ? 0 : n;
}

/* Send the `count` prepared answers; returns how many could not be sent (dropped, as a failed
 * sendto is in Python: buffer full, client gone). */
static Py_ssize_t
send_all(int fd, int count)
{
    Py_ssize_t dropped = 0;
    for (int off = 0; off < count;) { /* n < count: a partial send, go on */
        int n = sendmmsg(fd, smsg + off, (unsigned int)(count - off), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        dropped += n <= 0;
        off += n > 0 ? n : 1;
    }
    return dropped;
}

/* rcodes[r] += counts[r] for the list the Python counters hold. */
static int
add_counts(PyObject *rcodes, const Py_ssize_t *counts)
{
    for (int r = 0; r < 16 && r < PyList_GET_SIZE(rcodes); r++) {
        if (counts[r] == 0)
            continue;
        PyObject *inc = PyLong_FromSsize_t(counts[r]);
        PyObject *sum = inc ? PyNumber_Add(PyList_GET_ITEM(rcodes, r), inc) : NULL;
        Py_XDECREF(inc);
        if (sum == NULL)
            return -1;
        PyList_SetItem(rcodes, r, sum); /* steals sum */
    }
    return 0;
}

/* A hit: the key (network ID, data[2:]) is in the cache; its answer is prepared in smsg[hit]
 * and referenced in held[hit]. 0 for a miss, -1 on a Python error. */
static int
look_up(struct state *st, int i, unsigned long long net, int hit)
{
    const char *data = (const char *)rbuf[i];
    if (net != st->last_net) {
        Py_XDECREF(st->net_obj);
        st->net_obj = PyLong_FromUnsignedLongLong(net);
        st->last_net = st->net_obj ? net : ~0ULL;
        if (st->net_obj == NULL)
            return -1;
    }
    PyObject *tail = PyBytes_FromStringAndSize(data + 2, (Py_ssize_t)rmsg[i].msg_len - 2);
    PyObject *key = tail ? PyTuple_Pack(2, st->net_obj, tail) : NULL;
    Py_XDECREF(tail);
    if (key == NULL)
        return -1;
    PyObject *answer = PyDict_GetItemWithError(st->responses, key); /* borrowed */
    Py_DECREF(key);
    if (answer == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyBytes_Check(answer) || PyBytes_GET_SIZE(answer) < 2)
        return 0;
    const char *bytes = PyBytes_AS_STRING(answer);
    st->per_rcode[bytes[1] & 0x0F]++;
    held[hit] = Py_NewRef(answer);
    siov[hit][0] = (struct iovec){(void *)data, 2}; /* the client's ID */
    siov[hit][1] = (struct iovec){(void *)bytes, (size_t)PyBytes_GET_SIZE(answer)};
    smsg[hit].msg_hdr = (struct msghdr){.msg_name = &rname[i],
        .msg_namelen = rmsg[i].msg_hdr.msg_namelen, .msg_iov = siov[hit], .msg_iovlen = 2};
    return 1;
}

/* A miss, as socket.recvfrom would have returned it, appended to st->misses. */
static int
hand_over(struct state *st, int i)
{
    PyObject *addr = address_of(&rname[i]);
    PyObject *data = addr ? PyBytes_FromStringAndSize((const char *)rbuf[i], rmsg[i].msg_len)
                          : NULL;
    PyObject *pair = data ? PyTuple_Pack(2, data, addr) : NULL;
    Py_XDECREF(addr);
    Py_XDECREF(data);
    int rc = pair ? PyList_Append(st->misses, pair) : -1;
    Py_XDECREF(pair);
    return rc;
}

/* One batch: receive up to `want` datagrams, answer the hits, keep the misses. Returns how many
 * were received (0: the socket is empty), or -1 on a Python error (hits found are still sent). */
static int
batch(int fd, int want, struct state *st)
{
    int received = receive(fd, want), hits = 0, rc = 0;
    for (int i = 0; i < received && rc >= 0; i++) {
        if (rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) { /* over 4096 bytes */
            st->dropped++;
            continue;
        }
        const struct sockaddr_in6 *src = (const struct sockaddr_in6 *)&rname[i];
        const unsigned char *a = src->sin6_addr.s6_addr;
        int six_pn = src->sin6_family == AF_INET6 && a[0] == 0xfd && a[1] == 0xaa;
        rc = 0;
        if (rmsg[i].msg_len >= 12 && (six_pn || st->any_net >= 0)) {
            unsigned long long net = st->any_net >= 0 ? (unsigned long long)st->any_net
                : (unsigned long long)a[2] << 24 | a[3] << 16 | a[4] << 8 | a[5];
            rc = look_up(st, i, net, hits);
            hits += rc > 0;
        }
        if (rc == 0)
            rc = hand_over(st, i);
    }
    st->dropped += send_all(fd, hits);
    for (int i = 0; i < hits; i++)
        Py_DECREF(held[i]);
    return rc < 0 ? -1 : received;
}

/* Drain fd: batches until it is empty or `budget` datagrams were received; (received, dropped,
 * misses) or NULL on a Python error. */
static PyObject *
run_drain(long fd, long budget, PyObject *responses, PyObject *rcodes, long long any_net)
{
    struct state st = {.responses = responses, .any_net = any_net, .last_net = ~0ULL};
    if (!PyDict_Check(st.responses) || !PyList_Check(rcodes) || PyList_GET_SIZE(rcodes) < 16)
        return PyErr_Format(PyExc_TypeError, "responses: a dict; rcodes: a list of 16+ ints");
    if (fd < 0 || fd > INT_MAX || st.any_net > 0xFFFFFFFFLL)
        return PyErr_Format(PyExc_ValueError, "fd or any_source_net out of range");
    if (busy)
        return PyErr_Format(PyExc_RuntimeError, "drain is not re-entrant");
    if ((st.misses = PyList_New(0)) == NULL)
        return NULL;

    busy = 1;
    long received = 0;
    int n = 0, want = 0;
    /* Until the socket is empty: while one batch is answered, the next queries come in. A batch
     * short of what it asked for found the socket empty: no further recvmmsg only to hear
     * EAGAIN (one syscall per wake-up saved at a paced rate; whatever came meanwhile wakes the
     * next wait at once). */
    do {
        want = budget - received < MAX_BATCH ? (int)(budget - received) : MAX_BATCH;
        n = batch((int)fd, want, &st);
        received += n > 0 ? n : 0;
    } while (n == want && received < budget);
    busy = 0;
    Py_XDECREF(st.net_obj);
    if (n < 0 || add_counts(rcodes, st.per_rcode) < 0) {
        Py_DECREF(st.misses);
        return NULL;
    }
    return Py_BuildValue("(lnN)", received, st.dropped, st.misses);
}

static PyObject *
drain(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 5)
        return PyErr_Format(PyExc_TypeError, "drain() takes 4 or 5 arguments");
    long fd = PyLong_AsLong(args[0]), budget = PyLong_AsLong(args[3]);
    long long any_net = nargs == 5 && args[4] != Py_None ? PyLong_AsLongLong(args[4]) : -1;
    if (PyErr_Occurred())
        return NULL;
    return run_drain(fd, budget, args[1], args[2], any_net);
}

/* counters.<name> += n (a Python int attribute). */
static int
add_attr(PyObject *obj, const char *name, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    PyObject *was = PyObject_GetAttrString(obj, name);
    PyObject *inc = was ? PyLong_FromSsize_t(n) : NULL;
    PyObject *sum = inc ? PyNumber_Add(was, inc) : NULL;
    Py_XDECREF(was);
    Py_XDECREF(inc);
    int rc = sum ? PyObject_SetAttrString(obj, name, sum) : -1;
    Py_XDECREF(sum);
    return rc;
}

/* drain() counted into the server's counters (queries, dropped, rcodes); the misses. */
static PyObject *
count_drain(long fd, long budget, PyObject *responses, PyObject *counters)
{
    PyObject *rcodes = PyObject_GetAttrString(counters, "rcodes");
    PyObject *got = rcodes ? run_drain(fd, budget, responses, rcodes, -1) : NULL;
    Py_XDECREF(rcodes);
    if (got == NULL)
        return NULL;
    Py_ssize_t received = PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 0));
    Py_ssize_t dropped = PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 1));
    PyObject *misses = Py_NewRef(PyTuple_GET_ITEM(got, 2));
    Py_DECREF(got);
    if (PyErr_Occurred() || add_attr(counters, "queries", received) < 0
        || add_attr(counters, "dropped", dropped) < 0) {
        Py_DECREF(misses);
        return NULL;
    }
    return misses;
}

/* One wake-up's drain under `lock`: False if the zone's version is no longer `version`, else
 * the misses (an empty list: every query was answered here). */
static PyObject *
locked_drain(long fd, long budget, PyObject *const *args)
{
    PyObject *lock = args[5], *zone = args[6], *version = args[7];
    PyObject *held_lock = PyObject_CallMethod(lock, "acquire", NULL);
    if (held_lock == NULL)
        return NULL;
    Py_DECREF(held_lock);
    PyObject *now = PyObject_GetAttrString(zone, "version");
    int same = now ? PyObject_RichCompareBool(now, version, Py_EQ) : -1;
    Py_XDECREF(now);
    PyObject *out = same < 0 ? NULL : same ? count_drain(fd, budget, args[2], args[3])
                                           : Py_NewRef(Py_False);
    PyObject *released = PyObject_CallMethod(lock, "release", NULL);
    if (released == NULL) {
        Py_XDECREF(out);
        return NULL;
    }
    Py_DECREF(released);
    return out;
}

/* serve(fd, stop_fd, responses, counters, budget, lock, zone, version): wait until fd or stop_fd
 * is readable, the GIL released meanwhile (a UDP thread of its own waits here, not the event
 * loop); then, holding `lock` (the zone's: what the event loop changes), drain as drain() does,
 * counted into `counters` (.queries, .dropped, .rcodes); and wait again, as long as every query
 * was answered here (a paced stream of cached queries never returns to Python: one
 * epoll_wait, one recvmmsg and one sendmmsg a query). None: stop_fd is readable. False: the zone's version is
 * no longer `version` (the caller drops what changed, then drains). Else the misses, as drain()
 * gives them. */
static PyObject *
serve(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8)
        return PyErr_Format(PyExc_TypeError, "serve() takes 8 arguments");
    long fd = PyLong_AsLong(args[0]), stop = PyLong_AsLong(args[1]);
    long budget = PyLong_AsLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (stop < 0 || stop > INT_MAX || fd < 0 || fd > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "fd out of range");
    /* epoll, not poll: the two descriptors are registered once per call, not at every wait
     * (poll adds and removes a wait-queue entry on each, per query at a paced rate) */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct epoll_event on_fd = {.events = EPOLLIN, .data.fd = (int)fd};
    struct epoll_event on_stop = {.events = EPOLLIN, .data.fd = (int)stop};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, (int)fd, &on_fd) < 0
        || epoll_ctl(ep, EPOLL_CTL_ADD, (int)stop, &on_stop) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(ep);
        return NULL;
    }
    PyObject *out = NULL;
    for (;;) {
        struct epoll_event got[2];
        int ready;
        Py_BEGIN_ALLOW_THREADS
        do
            ready = epoll_wait(ep, got, 2, -1);
        while (ready < 0 && errno == EINTR);
        Py_END_ALLOW_THREADS
        if (ready < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            break;
        }
        int stopped = 0;
        for (int i = 0; i < ready; i++)
            stopped |= got[i].data.fd == (int)stop;
        if (stopped) {
            out = Py_NewRef(Py_None);
            break;
        }
        out = locked_drain(fd, budget, args);
        if (out == NULL || !PyList_Check(out) || PyList_GET_SIZE(out) > 0)
            break;
        Py_DECREF(out);
        out = NULL;
    }
    close(ep);
    return out;
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))drain, METH_FASTCALL,
     "drain(fd, responses, rcodes, budget, any_source_net=None) -> (received, dropped, misses):"
     " answer cached queries on UDP socket fd until it is empty; return the rest like recvfrom."},
    {"serve", (PyCFunction)(void (*)(void))serve, METH_FASTCALL,
     "serve(fd, stop_fd, responses, counters, budget, lock, zone, version) -> misses: wait for"
     " fd (or stop_fd: None), then under lock drain() it into counters (False if zone.version"
     " moved)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, .m_name = "_fastpath",
    .m_doc = "The DNS server's UDP loop for cached answers.", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    for (int i = 0; i < MAX_BATCH; i++) {
        riov[i] = (struct iovec){rbuf[i], MAX_DATAGRAM};
        rmsg[i].msg_hdr =
            (struct msghdr){.msg_name = &rname[i], .msg_iov = &riov[i], .msg_iovlen = 1};
    }
    return PyModule_Create(&module_def);
}
