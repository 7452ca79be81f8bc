"""stockops Kubernetes operator: reconciles StockModel and RetrainSchedule with kopf."""

__version__ = "0.1.0"
