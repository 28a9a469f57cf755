"""SO(3) / SE(3) helpers on numpy float64 arrays.

Twist order follows KP3D appendix F: ``xi = [omega (3), rho (3)]`` (rotation first).
Poses are 4x4 homogeneous matrices ``T_a_b`` mapping frame-b coordinates into frame a.
"""

from __future__ import annotations

import math

import numpy as np

from kp_vo.errors import InvalidInputError

_SMALL_ANGLE = 1e-4  # below this rotation angle (rad) Taylor series are used
_NEAR_PI = 1e-3  # within this of pi the rotation axis is taken from the symmetric part of R


def _vector(x: np.ndarray, size: int, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.shape != (size,):
        raise InvalidInputError(f"{name} must have shape ({size},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InvalidInputError(f"{name} contains NaN or inf")
    return v


def _matrix3(R: np.ndarray, name: str) -> np.ndarray:
    M = np.asarray(R, dtype=np.float64)
    if M.shape != (3, 3):
        raise InvalidInputError(f"{name} must be 3x3, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise InvalidInputError(f"{name} contains NaN or inf")
    return M


def skew(w: np.ndarray) -> np.ndarray:
    """(3,) vector -> (3, 3) skew-symmetric matrix ``[w]_x`` with ``[w]_x v = w x v``."""
    x, y, z = _vector(w, 3, "skew vector")
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def adjoint_translation_first(T: np.ndarray) -> np.ndarray:
    """(6, 6) adjoint of a (4, 4) pose for twists ordered (translation, rotation), the ROS order of
    twists and pose covariances: a twist expressed in frame b maps to frame a by Ad(T_a_b)."""
    R, t = T[:3, :3], T[:3, 3]
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[:3, 3:] = skew(t) @ R
    A[3:, 3:] = R
    return A


def so3_exp(omega: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) (axis * angle, rad) -> (3, 3) rotation matrix (Rodrigues)."""
    omega = _vector(omega, 3, "rotation vector")
    theta = float(np.linalg.norm(omega))
    W = skew(omega)
    if theta < _SMALL_ANGLE:
        a = 1.0 - theta**2 / 6.0
        b = 0.5 - theta**2 / 24.0
    else:
        a = math.sin(theta) / theta
        b = (1.0 - math.cos(theta)) / theta**2
    return np.eye(3) + a * W + b * (W @ W)


def so3_log(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> rotation vector (3,) with angle in [0, pi].

    Robust near 0 (Taylor series) and near pi (axis from the symmetric part of R).
    """
    R = _matrix3(R, "rotation")
    vee = 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])  # sin(theta) * axis
    s = float(np.linalg.norm(vee))
    c = 0.5 * (float(np.trace(R)) - 1.0)
    theta = math.atan2(s, c)
    if theta < _SMALL_ANGLE:
        return vee * (1.0 + theta**2 / 6.0)
    if math.pi - theta > _NEAR_PI:
        return vee * (theta / s)
    # Near pi: R + R^T = 2 cos(theta) I + 2 (1 - cos(theta)) n n^T.
    nnT = (0.5 * (R + R.T) - c * np.eye(3)) / (1.0 - c)
    k = int(np.argmax(np.diag(nnT)))
    axis = nnT[:, k] / math.sqrt(max(nnT[k, k], 1e-300))
    axis /= np.linalg.norm(axis)
    if float(axis @ vee) < 0.0:
        axis = -axis
    return axis * theta


def _left_jacobian(omega: np.ndarray) -> np.ndarray:
    """The V matrix of the SE(3) exponential: t = V rho."""
    theta = float(np.linalg.norm(omega))
    W = skew(omega)
    if theta < _SMALL_ANGLE:
        b = 0.5 - theta**2 / 24.0
        c = 1.0 / 6.0 - theta**2 / 120.0
    else:
        b = (1.0 - math.cos(theta)) / theta**2
        c = (theta - math.sin(theta)) / theta**3
    return np.eye(3) + b * W + c * (W @ W)


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """Twist ``[omega, rho]`` (6,) -> (4, 4) rigid transform ``[[exp(omega), V rho], [0, 1]]``."""
    xi = _vector(xi, 6, "twist")
    T = np.eye(4)
    T[:3, :3] = so3_exp(xi[:3])
    T[:3, 3] = _left_jacobian(xi[:3]) @ xi[3:]
    return T


def se3_exp_many(xi: np.ndarray) -> np.ndarray:
    """Twists (N, 6) ``[omega, rho]`` -> (N, 4, 4) rigid transforms: :func:`se3_exp` of each row, in one
    vectorised pass (the Taylor series below the small-angle threshold, as there)."""
    xi = np.asarray(xi, np.float64)
    if xi.ndim != 2 or xi.shape[1] != 6 or not np.isfinite(xi).all():
        raise InvalidInputError(f"twists must be a finite (N, 6) array, got shape {xi.shape}")
    omega, rho = xi[:, :3], xi[:, 3:]
    theta = np.linalg.norm(omega, axis=1)
    small = theta < _SMALL_ANGLE
    th = np.where(small, 1.0, theta)                     # no division by ~0 on the Taylor rows
    t2 = theta**2
    a = np.where(small, 1.0 - t2 / 6.0, np.sin(th) / th)
    b = np.where(small, 0.5 - t2 / 24.0, (1.0 - np.cos(th)) / th**2)
    c = np.where(small, 1.0 / 6.0 - t2 / 120.0, (th - np.sin(th)) / th**3)
    W = np.zeros((len(xi), 3, 3))
    W[:, 0, 1], W[:, 0, 2], W[:, 1, 2] = -omega[:, 2], omega[:, 1], -omega[:, 0]
    W = W - W.transpose(0, 2, 1)
    WW = W @ W
    eye = np.eye(3)
    T = np.zeros((len(xi), 4, 4))
    T[:, :3, :3] = eye + a[:, None, None] * W + b[:, None, None] * WW
    T[:, :3, 3] = np.einsum("nij,nj->ni", eye + b[:, None, None] * W + c[:, None, None] * WW, rho)
    T[:, 3, 3] = 1.0
    return T


def se3_log(T: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform -> twist ``[omega, rho]`` (6,), inverse of :func:`se3_exp`."""
    T = check_pose(T, "pose")
    omega = so3_log(T[:3, :3])
    rho = np.linalg.solve(_left_jacobian(omega), T[:3, 3])
    return np.concatenate([omega, rho])


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 3) rotation and (3,) translation -> (4, 4) homogeneous transform."""
    T = np.eye(4)
    T[:3, :3] = _matrix3(R, "rotation")
    T[:3, 3] = _vector(np.asarray(t, dtype=np.float64).reshape(-1), 3, "translation")
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Closed-form inverse of a (4, 4) rigid transform: ``T_b_a`` from ``T_a_b``."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InvalidInputError(f"pose must be 4x4, got shape {T.shape}")
    R = T[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (4, 4) ``T_a_b`` to (N, 3) points in frame b -> (N, 3) points in frame a."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InvalidInputError(f"pose must be 4x4, got shape {T.shape}")
    P = np.asarray(points, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 3:
        raise InvalidInputError(f"points must have shape (N, 3), got {P.shape}")
    return P @ T[:3, :3].T + T[:3, 3]


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a (3, 3) rotation matrix in degrees, in [0, 180]."""
    R = _matrix3(R, "rotation")
    vee = 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    c = 0.5 * (float(np.trace(R)) - 1.0)
    return math.degrees(math.atan2(float(np.linalg.norm(vee)), c))


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """Closest rotation (Frobenius norm) to a (3, 3) matrix: SVD with a determinant fix."""
    M = _matrix3(M, "matrix")
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def check_pose(T: np.ndarray, name: str = "pose", tol: float = 1e-5) -> np.ndarray:
    """Return ``T`` as a float64 (4, 4) array or raise InvalidInputError if it is not a rigid transform.

    Checks: shape 4x4, finite, last row [0, 0, 0, 1], R^T R = I and det(R) = +1 within ``tol``.
    """
    try:
        M = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} is not a numeric array: {exc}") from None
    if M.shape != (4, 4):
        raise InvalidInputError(f"{name} must be 4x4, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise InvalidInputError(f"{name} contains NaN or inf")
    if np.max(np.abs(M[3] - [0.0, 0.0, 0.0, 1.0])) > tol:
        raise InvalidInputError(f"{name} last row must be [0, 0, 0, 1], got {M[3].tolist()}")
    R = M[:3, :3]
    err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    if err > tol:
        raise InvalidInputError(f"{name} rotation is not orthonormal (max |R^T R - I| = {err:.2e})")
    if np.linalg.det(R) < 0:
        raise InvalidInputError(f"{name} rotation is a reflection (det(R) < 0)")
    return M
