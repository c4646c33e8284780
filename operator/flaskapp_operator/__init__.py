"""flaskapp-operator: runs Flask applications on Kubernetes, tuned the way an expert would."""

__version__ = "0.1.0"
