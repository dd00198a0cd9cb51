"""The run lifecycle in one place: how a run is named (:mod:`.names`), how command-line
overrides are read (:mod:`.overrides`, Hydra's parser), how a stopped run resumes
(:mod:`.resume`) and how a sweep is summed up (:mod:`.summary`)."""
