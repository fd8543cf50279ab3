"""yr: the namespace of openYuanrong's Python packages; this distribution
provides yr.datasystem (the datasystem client API, over our worker).

Other distributions may add packages under `yr` as well (pkgutil-style
namespace): the path of every `yr` directory on sys.path is searched.
"""

__path__ = __import__("pkgutil").extend_path(__path__, __name__)  # noqa: F821
