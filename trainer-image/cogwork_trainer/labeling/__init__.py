"""LabelJob runtime: what the labeling pods run.

    certify      Clopper-Pearson certified auto-accept threshold, calibration curve
    active       review-batch selection (margin, entropy, leastConfidence, random, coreset)
    label_errors cleanlab on out-of-sample (K-fold) probabilities
    learner      a small classifier trained in-process (folds, demos, benchmarks)
    pool         the unlabeled pool and its shards
    prelabel     one inference worker: score shard i of n, write a probability shard
    merge        shards -> labels table, review batch, label issues, calibration curve
    labelstudio  minimal Label Studio REST client (import tasks, read annotations back)
    review       between review rounds: collect the batch's labels, write the next training set
"""
