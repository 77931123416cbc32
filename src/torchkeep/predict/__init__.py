"""Predictors: a trained model with its preprocessing, loaded from a run, a bundle or an exported file.

    predictor.py   Predictor: tables, text and images; raw rows / images in, labels or original units out,
                   each kind through its schema's own `transform` and `decode`
    own_model.py   TensorPredictor: a model of torchkeep.fit; tensors in, tensors out
    array_files.py own models' .npy / .npz / .safetensors inputs and their outputs as files
    images.py      images for predict / evaluate: a folder, CSV, idx folder or an array of pixels
    load.py        load(path): the predictor of a run directory or bundle (torchkeep.load)

Common interface: `predict(data)`, `evaluate(labelled data)`, `task`, `model`, `meta`, `source`, `device`.
"""
