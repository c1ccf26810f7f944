#ifndef PAYFLEET_CCURL_SHIM_H
#define PAYFLEET_CCURL_SHIM_H
#include <curl/curl.h>
#include <unistd.h>
#include <sys/syscall.h>

/* curl_easy_setopt and curl_easy_getinfo are variadic: Swift cannot call them directly. */
static inline CURLcode payfleet_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode payfleet_curl_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode payfleet_curl_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode payfleet_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode payfleet_curl_setopt_read(CURL *h, size_t (*f)(char *, size_t, size_t, void *)) {
    return curl_easy_setopt(h, CURLOPT_READFUNCTION, f);
}
static inline CURLcode payfleet_curl_setopt_write(CURL *h, size_t (*f)(char *, size_t, size_t, void *)) {
    return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, f);
}
static inline CURLcode payfleet_curl_setopt_debug(CURL *h, int (*f)(CURL *, curl_infotype, char *, size_t, void *)) {
    return curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, f);
}
static inline CURLcode payfleet_curl_response_code(CURL *h, long *out) { return curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, out); }
/* A share object that pools connections: easy handles that use it reuse an open SMTP
   session (MAIL FROM on the same connection) instead of connecting for every message.
   Used from one thread only, so it needs no lock callbacks. */
static inline CURLSH *payfleet_curl_share_connections(void) {
    CURLSH *s = curl_share_init();
    if (s) curl_share_setopt(s, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    return s;
}
static inline CURLcode payfleet_curl_setopt_share(CURL *h, CURLSH *s) { return curl_easy_setopt(h, CURLOPT_SHARE, s); }
/* syncfs(2) (Glibc declares it only under _GNU_SOURCE, which Swift's Glibc module does not
   set): the receipts sandbox makes a group of written files durable with one call. */
static inline int payfleet_syncfs(int fd) { return (int)syscall(SYS_syncfs, fd); }
#endif
