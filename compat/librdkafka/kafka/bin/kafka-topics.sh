#!/usr/bin/env python3
"""A stand-in for Apache Kafka's bin/kafka-topics.sh, for the librdkafka suite.

A few suite tests (0045, 0052, 0077) shell out to "$KAFKA_PATH/bin/kafka-topics.sh" to create,
grow or delete topics. There is no Kafka install here, so run.py points KAFKA_PATH at this folder.
It takes the same arguments and does the same thing through Kafka's admin API, with kafka-python
(an unmodified client), so the broker is exercised exactly as by the real tool.

    kafka-topics.sh --bootstrap-server HOST:PORT --create --topic T [--partitions N]
                    [--replication-factor R] [--config k=v ...]
    kafka-topics.sh --bootstrap-server HOST:PORT --alter --topic T --partitions N
    kafka-topics.sh --bootstrap-server HOST:PORT --delete --topic T
"""

import argparse
import sys

from kafka.admin import KafkaAdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser(prog="kafka-topics.sh")
    ap.add_argument("--bootstrap-server", required=True)
    action = ap.add_mutually_exclusive_group(required=True)
    action.add_argument("--create", action="store_true")
    action.add_argument("--alter", action="store_true")
    action.add_argument("--delete", action="store_true")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int)
    ap.add_argument("--replication-factor", type=int, default=-1)
    ap.add_argument("--config", action="append", default=[])
    args = ap.parse_args()

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap_server, client_id="kafka-topics.sh")
    try:
        if args.create:
            configs = dict(c.split("=", 1) for c in args.config)
            admin.create_topics([NewTopic(args.topic, args.partitions or -1,
                                          args.replication_factor, topic_configs=configs)])
            print(f"Created topic {args.topic}.")
        elif args.alter:
            if args.partitions is None:
                sys.exit("--alter needs --partitions")
            admin.create_partitions({args.topic: args.partitions})
        else:
            admin.delete_topics([args.topic])
    finally:
        admin.close()


if __name__ == "__main__":
    main()
