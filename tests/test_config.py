from typing import Annotated, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from argusnet.config import ArgusConfig, load_config
from camera_node.config import CameraConfig
from gpu_worker.detect.config import RetinaFaceConfig
from gpu_worker.embed.config import DlibEmbedderConfig, OnnxEmbedderConfig
from shared.errors import ConfigError
from shared.schema import Section
from store.config import LocalStoreConfig, RedisStoreConfig
from tracker.config import ByteTrackConfig, SortConfig


def test_defaults_are_valid():
    cfg = load_config(environ={})
    assert isinstance(cfg, ArgusConfig)
    assert cfg.detector.type == "retinaface"
    assert cfg.embedder.type == "dlib"


def test_yaml_then_environment_override(tmp_path):
    path = tmp_path / "argus.yaml"
    path.write_text("detector:\n  max_side: 480\nrecognition:\n  threshold: 0.7\n")
    cfg = load_config(path, environ={"ARGUSNET__RECOGNITION__THRESHOLD": "0.9"})
    assert cfg.detector.max_side == 480
    assert cfg.recognition.threshold == 0.9


def test_error_names_field_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"ARGUSNET__DETECTOR__MAX_SIDE": "5"})
    assert "detector.max_side = 5" in str(err.value)
    assert "greater than or equal to 64" in str(err.value)


def test_unknown_key_is_refused(tmp_path):
    path = tmp_path / "argus.yaml"
    path.write_text("gallery:\n  hnsw_abov: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "gallery.hnsw_abov" in str(err.value)
    assert "Extra inputs are not permitted" in str(err.value)


def test_unknown_backend_type_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"ARGUSNET__EMBEDDER__TYPE": "facenet"})
    assert "'facenet'" in str(err.value)


def test_onnx_embedder_needs_card_and_path():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"ARGUSNET__EMBEDDER__TYPE": "onnx"})
    assert "embedder.card = (missing)" in str(err.value)
    assert "embedder.path = (missing)" in str(err.value)


@pytest.mark.parametrize("text, needle", [("[1, 2", "cannot read"), ("- a\n- b\n", "must hold a mapping")])
def test_bad_yaml_file(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, environ={})


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/argus.yaml", environ={})


def _models_in(annotation):
    """The pydantic models an annotation names, unwrapping ``Annotated[...]`` (discriminated unions), unions
    (``X | Y``, ``Optional[X]``, ``typing.Union``) and containers (``list[X]``, ``dict[str, X]``, ...)."""
    origin = get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
        return
    args = get_args(annotation)
    if origin is Annotated:
        args = args[:1]  # the type; the rest is metadata (Tag, Discriminator, ...)
    elif origin is Literal:
        return
    for arg in args:
        yield from _models_in(arg)


def test_every_field_is_described_and_models_forbid_extras():
    visited: set[type[BaseModel]] = set()

    def walk(model):
        if model in visited:
            return
        visited.add(model)
        assert issubclass(model, Section), f"{model.__name__} is not a Section"
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for sub in _models_in(field.annotation):
                walk(sub)

    walk(ArgusConfig)
    # the backends inside discriminated unions (and the camera list) are walked too, not silently skipped
    for model in (DlibEmbedderConfig, OnnxEmbedderConfig, ByteTrackConfig, SortConfig, LocalStoreConfig,
                  RedisStoreConfig, RetinaFaceConfig, CameraConfig):
        assert model in visited, f"{model.__name__} is not reached from ArgusConfig"


@pytest.mark.parametrize("camera_id", ["..", ".cam", "-cam", "cam/1", ""])
def test_camera_ids_that_could_escape_a_folder_are_refused(tmp_path, camera_id):
    path = tmp_path / "argus.yaml"
    path.write_text(f"up:\n  cameras:\n    - id: '{camera_id}'\n      source: demo\n")
    with pytest.raises(ConfigError, match=r"up\.cameras\.0\.id"):
        load_config(path, environ={})


def test_duplicate_camera_ids_are_refused_naming_the_second_one(tmp_path):
    path = tmp_path / "argus.yaml"
    path.write_text("up:\n  cameras:\n    - {id: door, source: demo}\n    - {id: hall, source: demo}\n"
                    "    - {id: door, source: other.mp4}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "up.cameras[2].id 'door' is already the id of up.cameras[0]" in str(err.value)


def test_a_long_bad_value_is_shown_cut_short():
    cameras = [{"id": "cam", "source": "demo", "fps": 5.0}] * 40
    with pytest.raises(ConfigError) as err:
        load_config(environ={}, overrides={"up": {"cameras": cameras}})
    line = next(line for line in str(err.value).splitlines() if "up.cameras[1].id" in line)
    assert len(line) < 400 and "..." in line


def test_a_redis_store_from_the_environment():
    cfg = load_config(environ={"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": "redis://127.0.0.1:6380/2",
                               "ARGUSNET__STORE__PREFIX": "site_a"})
    assert isinstance(cfg.store, RedisStoreConfig)
    assert (cfg.store.url, cfg.store.prefix, cfg.store.password_file) == ("redis://127.0.0.1:6380/2", "site_a", None)
    assert isinstance(load_config(environ={}).store, LocalStoreConfig)  # no type: the local store, as before


def test_a_redis_url_is_described_without_its_password():
    assert RedisStoreConfig(url="redis://bob:hunter2@localhost:6379/1").describe() == "redis://bob@localhost:6379/1"
    assert RedisStoreConfig(url="rediss://:hunter2@[::1]:6390").describe() == "rediss://[::1]:6390"


@pytest.mark.parametrize("env, message", [
    ({"ARGUSNET__STORE__URL": "http://127.0.0.1:6379/0"}, r"store\.url = 'http://127.0.0.1:6379/0'.*scheme 'http'"),
    ({"ARGUSNET__STORE__URL": "redis://127.0.0.1:6379/x"}, r"store\.url .*database must be a number"),
    ({"ARGUSNET__STORE__URL": "redis://10.1.2.3:6379/0"}, r"off loopback: set store\.password_file"),
    ({"ARGUSNET__STORE__URL": "redis://127.0.0.1/0", "ARGUSNET__STORE__PREFIX": "a:b"}, r"store\.prefix = 'a:b'"),
    ({"ARGUSNET__STORE__URL": "redis://127.0.0.1/0", "ARGUSNET__STORE__SOCKET_TIMEOUT_S": "0"},
     r"store\.socket_timeout_s = 0"),
    ({}, r"store\.url = \(missing\)"),
])
def test_bad_redis_store_settings_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={"ARGUSNET__STORE__TYPE": "redis", **env})


def test_an_off_loopback_redis_with_a_password_file_is_accepted(tmp_path):
    cfg = load_config(environ={"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": "redis://10.1.2.3:6379/0",
                               "ARGUSNET__STORE__PASSWORD_FILE": str(tmp_path / "pw")})
    assert cfg.store.password_file == tmp_path / "pw"
