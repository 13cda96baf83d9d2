"""Fraud model side: stateful features, the online learner, the offline evaluation.

* :mod:`models.fraud.features`: the one feature implementation (training, evaluation, worker).
* :mod:`models.fraud.online`: the River model that learns from delayed labels.
* :mod:`models.fraud.protocol`: the handbook's test-set construction and card precision@k.
* :mod:`models.fraud.evaluate`: ``lepton evaluate fraud``: the whole file, streamed.
"""
