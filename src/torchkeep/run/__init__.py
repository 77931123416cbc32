"""The run lifecycle, once for every kind of data.

    rundir.py           RunDir: naming, the "already exists" guard, the JSON files, reopening; the data
                        fingerprint and the seeded split
    settings.py         keyword settings onto RunConfig, the default monitor, reading init_from
    session.py          Setup (what a kind's setup hands over) and the training session every kind ends with
    train.py            torchkeep.train: start or resume a table, text or image run
    tables.py           table runs (text columns too): start, reopen
    text.py             what text columns change: training defaults, model arguments, pretrained vectors
    images.py           image runs: start, reopen
    own_model.py        torchkeep.fit: a user's own nn.Module
    tables_transfer.py  transfer learning between table models (embedding rows by level)
    images_transfer.py  transfer learning between image models (head rows by label)
    verify.py           checkpoints --verify-resume: replay from one checkpoint to the next, compare
"""
