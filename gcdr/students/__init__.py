"""Stage 3: the students, VAT (Chong et al. 2020) and Gaze-LLE (Ryan et al. 2025).

    vat.py            VAT ModelSpatial / its encoder (official keys), MSE x 10000 loss, weight loader
    gazelle.py        Gaze-LLE on a frozen transformers DINOv2 (official decoder keys), BCE loss
    training.py       StudentConfig (the ``student:`` section), training set, batches, targets, checkpoints
    feature_cache.py  Gaze-LLE backbone features computed once per image
    benchmark.py      training throughput and where the time goes (``make bench``)

The loop is ``pipelines/train_student.py``; ``pipelines/evaluate.py`` and ``pipelines/predict.py`` use
checkpoints that rebuild themselves from their stored model config.
"""
