#!/usr/bin/env bash
# permessage-deflate, compress once vs per socket (issue 12), all in one run so the ratios are
# same-run ratios. Every fanout run publishes demo-feed-like JSON (--data market, ~110-130 B of
# data: trades and best bid/offers) and is run twice, plain and with the clients offering
# permessage-deflate (DEFLATE=1, see lib.sh):
#   md-high   tickcast, market data at its usual rate: 10k subs x 5 of 200 topics, 4 publishers,
#             MD_RATE_HIGH msgs/s (20000 = 5 M deliveries/s offered)
#   1k-high   tickcast, 1k subs x 1 topic at ONE_RATE_HIGH msgs/s (1000 = 1 M deliveries/s)
#   md-low    the same market-data shape at MD_RATE_LOW msgs/s (40 = 10k deliveries/s), for every
#             server of LOW_SERVERS: a rate the per-socket baselines sustain with deflate
#   1k-low    1k x 1 topic at ONE_RATE_LOW msgs/s (10 = 10k deliveries/s), LOW_SERVERS
#   connect   19,000 idle subscribed connections: RSS per connection, plain vs deflate, for
#             CONNECT_SERVERS (default "tickcast node-ws"; the baseline creates its compressor at
#             a connection's first data message, so idle it is the same with deflate)
# The order of the variants alternates between rounds. Server restarted before every run.
# Usage: perf/scenarios/deflate.sh [RUNS] [SHAPES]   (SHAPES: comma-separated, default all)
# Env: LOW_SERVERS (default "tickcast baseline node-ws"), CONNECT_SERVERS, MD_RATE_HIGH, MD_RATE_LOW,
#      ONE_RATE_HIGH, ONE_RATE_LOW, SKIP_BUILD=1, and lib.sh's.
source "$(dirname "$0")/lib.sh"
runs="${1:-1}"; shapes="${2:-md-high,1k-high,md-low,1k-low,connect}"
low_servers="${LOW_SERVERS:-tickcast baseline node-ws}"
connect_servers="${CONNECT_SERVERS:-tickcast node-ws}"
md_high="${MD_RATE_HIGH:-20000}"; md_low="${MD_RATE_LOW:-40}"
one_high="${ONE_RATE_HIGH:-1000}"; one_low="${ONE_RATE_LOW:-10}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  build_bench; build_server tickcast
  for s in $low_servers $connect_servers; do [ "$s" = tickcast ] || build_server "$s"; done
fi

market_data() {
  bench fanout --subs 10000 --topics 200 --topics-per-sub 5 --pubs 4 --rate "$1" --payload 100 \
    --data market --duration 10 --warmup 2 --source-ips "$SOURCE_IPS"
}
one_topic() {
  bench fanout --subs 1000 --topics 1 --pubs 1 --rate "$1" --payload 100 --data market \
    --duration 10 --warmup 2 --source-ips "$SOURCE_IPS"
}

# run SERVER DEFLATE SHAPE
run() {
  DEFLATE="$2"
  log "$3: $1, deflate=$2"
  restart_server "$1"
  case "$3" in
    md-high) market_data "$md_high" ;;
    1k-high) one_topic "$one_high" ;;
    md-low) market_data "$md_low" ;;
    1k-low) one_topic "$one_low" ;;
    connect) bench connect -n 19000 --hold 10 --source-ips "$SOURCE_IPS" ;;
    *) echo "unknown shape $3" >&2; exit 2 ;;
  esac
}

for round in $(seq 1 "$runs"); do
  for shape in ${shapes//,/ }; do
    case "$shape" in
      md-low|1k-low) servers="$low_servers" ;;
      connect) servers="$connect_servers" ;;
      *) servers="tickcast" ;;
    esac
    variants=()
    for s in $servers; do variants+=("$s 0" "$s 1"); done
    if [ $((round % 2)) = 0 ]; then
      # Reverse the order on even rounds: no variant always runs on a warmer machine.
      for ((i = ${#variants[@]} - 1; i >= 0; i--)); do run ${variants[$i]} "$shape"; done
    else
      for v in "${variants[@]}"; do run $v "$shape"; done
    fi
  done
done
finish
