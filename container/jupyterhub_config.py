"""An example JupyterHub configuration: every user gets a ferrolab container.

Start the hub with it (or copy the parts you need into your own config):

    pip install jupyterhub dockerspawner        # KubeSpawner: jupyterhub-kubespawner
    jupyterhub -f container/jupyterhub_config.py

The user image is built from container/Containerfile. Choose an authenticator for
your site (c.JupyterHub.authenticator_class); this file does not pick one.

Settings come from the environment, so one file serves several deployments:

    FERROLAB_IMAGE          the user image (default ferrolab:cuda)
    FERROLAB_HUB_SPAWNER    docker (default) or kubernetes
    FERROLAB_HUB_GPUS       GPUs per user: all (default), a number, or none
    FERROLAB_HUB_CACHE      per-user (default) or shared: see build_cache_volume()
    FERROLAB_HUB_NETWORK    the Docker network the hub and the user containers share
                            (default jupyterhub; the hub container's name there is
                            FERROLAB_HUB_CONNECT_IP, default jupyterhub)
"""

import os

c = get_config()  # noqa: F821 -- JupyterHub defines get_config() for its config files

IMAGE = os.environ.get("FERROLAB_IMAGE", "ferrolab:cuda")
SPAWNER = os.environ.get("FERROLAB_HUB_SPAWNER", "docker")
GPUS = os.environ.get("FERROLAB_HUB_GPUS", "all")
CACHE = os.environ.get("FERROLAB_HUB_CACHE", "per-user")

# Paths inside the image (container/Containerfile): the build cache's VOLUME, which
# holds the cache directory the entry script creates, and the notebook user's home.
CACHE_VOLUME = "/var/cache/ferrolab"
HOME = "/home/jovyan"
# The image's entry script prepares the cache and the kernelspec, then execs this.
SINGLEUSER_CMD = ["jupyterhub-singleuser"]
# The users' environment (all of it: a spawner's own `environment` would replace
# Spawner.environment, not add to it).
ENVIRONMENT = {
    # The size limit of each user's build cache in MB (ferrolab's default is 4096).
    "FERROLAB_BUILD_CACHE_MB": os.environ.get("FERROLAB_HUB_CACHE_MB", "8192"),
}


def build_cache_volume():
    """The Docker volume that holds a user's build cache.

    per-user: one volume per user. A kernel loads the compiled crates kept in the
    cache, so a user's cache must not be writable by anyone else.

    shared: one volume for all users (every container runs as uid 1000, so ferrolab
    accepts it). Any user's kernel can then put code there that other users'
    kernels load: share it only within a team whose members trust each other.
    A read-only mount is refused by the entry script (the cache must be writable);
    to give users a read-only cache, turn it off with FERROLAB_BUILD_CACHE_MB=0.
    """
    if CACHE == "shared":
        return "ferrolab-cache-shared"
    if CACHE == "per-user":
        return "ferrolab-cache-{username}"
    raise ValueError(f"FERROLAB_HUB_CACHE={CACHE!r}: use per-user or shared")


def docker_device_requests():
    """`docker run --gpus` as DockerSpawner's host config says it; [] for none."""
    if GPUS == "none":
        return []
    count = -1 if GPUS == "all" else int(GPUS)
    return [{"driver": "nvidia", "count": count, "capabilities": [["gpu"]]}]


def use_dockerspawner(c):
    c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
    c.DockerSpawner.image = IMAGE
    c.DockerSpawner.cmd = SINGLEUSER_CMD
    c.DockerSpawner.notebook_dir = f"{HOME}/work"
    # Named volumes outlive the containers (remove=True removes only the container
    # and its anonymous volumes: without a named volume at CACHE_VOLUME every start
    # would compile from scratch).
    c.DockerSpawner.volumes = {
        "jupyterhub-user-{username}": f"{HOME}/work",
        build_cache_volume(): CACHE_VOLUME,
    }
    c.DockerSpawner.remove = True
    requests = docker_device_requests()
    if requests:
        c.DockerSpawner.extra_host_config = {"device_requests": requests}
    # The hub runs in a container on the same Docker network as the users' containers.
    c.DockerSpawner.network_name = os.environ.get("FERROLAB_HUB_NETWORK", "jupyterhub")
    c.JupyterHub.hub_ip = "0.0.0.0"
    c.JupyterHub.hub_connect_ip = os.environ.get("FERROLAB_HUB_CONNECT_IP", "jupyterhub")


def use_kubespawner(c):
    """KubeSpawner instead: a GPU per user pod, the build cache on the user's PVC."""
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.KubeSpawner.image = IMAGE
    c.KubeSpawner.cmd = SINGLEUSER_CMD
    c.KubeSpawner.uid = 1000
    # The PVC's root gets group 100 (the notebook user's group) with group write; the
    # entry script creates the cache in it as a directory of the user's own (0700).
    c.KubeSpawner.fs_gid = 100
    if GPUS != "none":
        # Kubernetes counts GPUs: "all" means one here.
        c.KubeSpawner.extra_resource_limits = {"nvidia.com/gpu": "1" if GPUS == "all" else GPUS}
    # One PVC per user, created on first start, mounted whole (no subPath: kubelet
    # creates subPath directories as root). The notebooks and the cache share it.
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.pvc_name_template = "ferrolab-{username}"
    c.KubeSpawner.storage_capacity = os.environ.get("FERROLAB_HUB_PVC_SIZE", "20Gi")
    c.KubeSpawner.volumes = [
        {"name": "user-data", "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
    ]
    c.KubeSpawner.volume_mounts = [{"name": "user-data", "mountPath": f"{HOME}/work"}]
    c.KubeSpawner.notebook_dir = f"{HOME}/work"
    # Kubernetes ignores the image's VOLUME: the cache goes on the PVC.
    ENVIRONMENT["FERROLAB_BUILD_CACHE_DIR"] = f"{HOME}/work/.ferrolab/build-cache"


if SPAWNER == "docker":
    use_dockerspawner(c)
elif SPAWNER == "kubernetes":
    use_kubespawner(c)
else:
    raise ValueError(f"FERROLAB_HUB_SPAWNER={SPAWNER!r}: use docker or kubernetes")

# Compiling a cell (rust-analyzer, rustc, the linker) takes memory: give each user
# a few GB. DockerSpawner and KubeSpawner both read these.
c.Spawner.mem_limit = os.environ.get("FERROLAB_HUB_MEM_LIMIT", "16G")
c.Spawner.environment = ENVIRONMENT
