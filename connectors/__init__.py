"""Everything at the edge of Kafka.

* ``kafka_config``: settings → client configs; waiting for a broker.
* ``broker``: the embedded, memory-only Tansu broker.
* ``admin``: topics, true end offsets, consumer lag.
* ``generators``: synthetic streams with ground truth.
* ``replay``: events from CSV/Parquet files.
* ``producer``: events and delayed labels onto the topics.
"""
