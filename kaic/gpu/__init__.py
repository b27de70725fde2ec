"""The GPUs of this machine, through NVML: shared by `kaic bench` and the job metrics sampler.

Modules:

- ``nvml``       the NVML seam (``NvmlApi``: exactly the pynvml calls kaic makes, so a test
                 double fits), opening and closing NVML, errors as ``NvmlUnavailable``
- ``inventory``  nvidia-smi-like facts about one GPU (``Inventory``)

pynvml (package ``nvidia-ml-py``) is imported only when NVML is opened, so importing this
package costs nothing at CLI start.
"""
