#ifndef PAYFLEET_CRABBITMQ_SHIM_H
#define PAYFLEET_CRABBITMQ_SHIM_H
/* rabbitmq-c 0.12+ moved its headers under rabbitmq-c/; Debian 12 ships 0.11 with amqp.h. */
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/ssl_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#endif
#include <poll.h>

/* amqp_login is variadic: Swift cannot call it directly. */
static inline amqp_rpc_reply_t payfleet_amqp_login(amqp_connection_state_t state, const char *vhost,
                                                  int channel_max, int frame_max, int heartbeat,
                                                  const char *user, const char *password) {
    return amqp_login(state, vhost, channel_max, frame_max, heartbeat, AMQP_SASL_METHOD_PLAIN, user, password);
}
#endif
