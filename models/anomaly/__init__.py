"""Equipment anomaly detection on sensor frames (see ``models/anomaly/README.md``)."""
