"""finpass-pipeline: Kafka domain events into PostgreSQL rows and an audit log, effectively once."""

__version__ = "0.1.0"
