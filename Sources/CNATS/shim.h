// The one header the CNATS module exposes: nats.c's public API (Debian's libnats-dev,
// nats.c 3.x). Only <nats/nats.h>, not the adapters (they need libevent or libuv).
#ifndef NEFFOS_CNATS_SHIM_H
#define NEFFOS_CNATS_SHIM_H

#if defined(__has_include)
#if !__has_include(<nats/nats.h>)
#error "nats.c is not installed: the NATS exchange needs it. On Debian or Ubuntu: apt-get install libnats-dev (or run scripts/test, which installs it). To build without NATS, leave out the NATS trait and the NeffosNATS target."
#endif
#endif

#include <nats/nats.h>

#endif
