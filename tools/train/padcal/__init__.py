"""padcal: calibrate the presentation-attack detector to a booth's own camera, light and attacks.

Run it with ``python3 tools/train/padcal/calibrate.py`` (docs/training.md). Modules, each using
only those listed before it:

* ``splits``     which images train and which validate (shared sources, a site's sessions)
* ``faces``      the runtime's crop geometry
* ``embeddings`` caches of the upstream networks' activations (ONNX Runtime), computed once
* ``heads``      the linear heads and the export to Veriframe model files (`veriframe model convert`)
* ``tail``       the fine-tune of the last blocks (and conv_5) on the caches, numpy only
* ``threshold``  operating thresholds from validation scores
* ``recipe``     recipes as data (recipes/*.toml), trained by ``tail``
* ``calibrate``  the command line: ``embed``, ``check``, ``site`` and ``train``
"""
