"""ament_python package kp_vo: installs with pip (no ROS needed) and builds with colcon where ROS is."""

from glob import glob

from setuptools import find_packages, setup

package_name = "kp_vo"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
        ("share/" + package_name + "/models", glob("models/*.onnx") + glob("models/*.safetensors") + glob("models/*.md")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="kp_vo developers",
    maintainer_email="kp-vo@example.org",
    description="Learned-keypoint (KP3D, ViewSynth) visual odometry and relocalization for ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "kp-vo = kp_vo.cli:main",
            "vo_node = kp_vo.ros.vo_node:main",
            "reloc_node = kp_vo.ros.reloc_node:main",
        ],
    },
)
