"""tmkd_core: the library behind the TMKD companion.

    priors       views of an image: rgb, edge, hf (method.md §1)
    models       CIFAR ResNets / WRNs and the multi-view teacher (§2)
    text         the frozen text teacher and prior-aware prompts (§3)
    fusion       semantic weights and view fusion (§4)
    losses       KD, DKD, feature, text NCE, batch InfoNCE
    distillers   CE / KD / DKD / TMKD, each returning (logits, {term: loss}) (§5)
    teachers     frozen teachers and the teacher-output cache
    train        the training loop, evaluation, checkpoints and resume
    data         datasets (offline mirrors first), splits, augmentation plans
    config       dataclass configurations, switches, profiles, methods, ablations
    experiment   the cached pipeline the notebooks call
    analysis     fusion weights, Grad-CAM, spectra for figures
    report       figures, tables and results files
"""
__version__ = "0.1.0"
