"""One installable distribution. Dataflow ships it to workers with --setup_file ./setup.py."""

from setuptools import find_packages, setup

setup(
    name="cliffhanger",
    version="0.1.0",
    description="Real-time recommendations for serialized short-form video (Beam + TFRS + ScaNN + ONNX)",
    python_requires=">=3.11,<3.12",
    # `cliffhanger` holds what all four layers share and which must import without Beam or TF
    # (event schema, config, resource declaration, catalog, local stack, synthetic world), so the
    # PyFlink venv and the serving image can import it too.
    packages=find_packages(include=["cliffhanger*", "pipelines*", "transforms*", "models*", "serving*"]),
    install_requires=[
        "apache-beam[gcp]==2.77.0",
        "google-cloud-bigtable>=2.50,<3",
        "google-cloud-pubsub>=2.44,<3",
    ],
    extras_require={
        "train": [
            "tensorflow==2.20.*",
            "tf-keras==2.20.*",
            "tensorflow-recommenders==0.7.7",
            "scann==1.4.2",
            "tf2onnx==1.17.0",
        ],
        "serve": [
            "onnxruntime",
            "numba",
            "fastapi",
            "uvicorn",
            "uvloop",
            "httptools",
            "prometheus-client",
            "scann==1.4.2",
        ],
    },
)
