"""stockops core library: bars, sources, the Kafka-to-Blob data plane, and the model workloads."""

__version__ = "0.1.0"
