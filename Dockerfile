# delayer container image: one image, every tool; deploy/entrypoint.sh picks
# the stage (DELAYER_STAGE or the first argument) and builds its options from
# the environment. docs/deploy-aws.md has the variables and the AWS set-up.
#
#   docker build -t delayer .
#   docker run --rm -e DELAYER_STAGE=sqs-push ... delayer
#   docker run --rm delayer delayer --help
#
# Two stages: `build` compiles the tools with the Debian 12 toolchain and
# development packages; the runtime image holds only the binaries, the shared
# libraries they link (libcurl4, libssl3, libzmq5, libmicrohttpd12 and what those depend on),
# the CA certificates TLS verification needs, and /bin/sh for the entrypoint.
# It runs as the unprivileged user `delayer` (uid/gid 10001).
# tests/sh/test_deploy.sh checks this file's package lists against what the
# binaries really link, and runs the same layout in a chroot.

FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc make libc6-dev libcurl4-openssl-dev libssl-dev libzmq3-dev libmicrohttpd-dev libjsmn-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY lib/ lib/
COPY tools/ tools/
# Only the tools (bin/NAME for every tools/NAME.c), not the unit tests;
# stripped, since the runtime image carries no debugger.
RUN make -j"$(nproc)" $(for f in tools/*.c; do n=${f#tools/}; echo "bin/${n%.c}"; done) \
 && strip bin/*

FROM debian:12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libcurl4 libssl3 libzmq5 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 delayer \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin delayer
COPY --from=build /src/bin/ /usr/local/bin/
COPY deploy/entrypoint.sh /usr/local/bin/delayer-entrypoint
RUN chmod 0755 /usr/local/bin/delayer-entrypoint
USER 10001:10001
# Nothing is written to disk at run time: the image works with a read-only
# root file system (ECS readonlyRootFilesystem, Kubernetes readOnlyRootFilesystem).
ENTRYPOINT ["/usr/local/bin/delayer-entrypoint"]
