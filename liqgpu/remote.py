"""Object storage: moved to :mod:`liqgpu.store.remote`; this name stays for the documented
``liqgpu.remote.publish``."""

from .store.remote import (ROOT, check_remote_target, is_url, open_remote, publish,  # noqa: F401
                           read_root, staged, url_fs)
