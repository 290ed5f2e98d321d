// The one header the CNATS module exposes: nats.c's public API (Debian's libnats-dev,
// nats.c 3.x). Only <nats/nats.h>, not the adapters (they need libevent or libuv).
#ifndef NEFFOS_CNATS_SHIM_H
#define NEFFOS_CNATS_SHIM_H

#include <nats/nats.h>

#endif
