"""Training data: ``dataset.json`` descriptions, per-modality samplers for unpaired training,
and the synthetic phantom generator (:mod:`.phantoms`)."""
