"""Lightning callbacks, one module each: reproducible epochs (:mod:`.seeding`), metric figures
(:mod:`.metric_figures`) and Grad-CAM galleries (:mod:`.gradcam`)."""
