"""Stage 3: the students, VAT (Chong et al. 2020) and Gaze-LLE (Ryan et al. 2025), behind one interface.

    student.py        the Student interface: forward on a batch dict, loss, trainable state,
                      save_pretrained / from_pretrained (config.json + model.safetensors)
    registry.py       student name -> Student class (the only place that knows the names)
    vat.py            VAT ModelSpatial (official keys), MSE x 10000 loss, VATStudent
    gazelle.py        Gaze-LLE on a frozen DINOv2 / BLIP tower (official decoder keys), BCE loss, GazeLLEStudent
    config.py         StudentConfig (the ``student:`` section)
    recipe.py         training set, batch sampler, targets, the loss of a batch, LR schedule
    train.py          the training loop (``make train-student``)
    evaluation.py     prediction and test metrics (``make eval``, the loop's evaluation)
    prediction.py     predictions drawn on any images (``make predict``)
    export.py         every student file format: model directories, gcdr .pt, official files (``make export``)
    feature_cache.py  backbone features computed once per image (students with a frozen backbone)

The runners in ``pipelines/`` parse arguments and call these.
"""
