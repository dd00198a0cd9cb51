"""Test helpers: the CLI (:mod:`.cli`), small datasets (:mod:`.data`), TensorBoard events
(:mod:`.tensorboard`) and scrape configs against the fake iNaturalist (:mod:`.scrape`)."""
