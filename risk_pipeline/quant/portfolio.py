"""A book of stocks and vanilla options as per-position arrays (valued and revalued by ``scenario_engine``).

Conventions (docs/architecture.md): ``quantity > 0`` is long; ``units = quantity * multiplier`` shares
(or options on one share each); option inputs per position are the strike, the time to expiry in
years, the implied volatility (decimal), the continuous rate and dividend yield; ``is_american``
marks American exercise (priced by ``american.py``) instead of European (Black-Scholes-Merton). Spots are per symbol
(``symbols[symbol_index[i]]`` is position ``i``'s underlying).

``scenario_engine.market_values`` values a portfolio today and ``scenario_engine.revalue`` /
``scenario_engine.evaluate`` revalue it in full under scenarios; this module depends on no pricer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import BoolArray, FloatArray, IntArray


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Portfolio:
    """Per-position arrays plus per-symbol ``symbols`` and ``spot``.

    Position fields after ``quantity`` may be scalars (broadcast to every position). Stocks ignore the
    option fields. ``position_id`` defaults to ``"0", "1", ...``. Arrays are stored read-only.
    """

    symbols: tuple[str, ...]
    spot: FloatArray
    symbol_index: IntArray
    quantity: FloatArray
    multiplier: FloatArray | float = 1.0
    is_option: BoolArray | bool = False
    is_call: BoolArray | bool = True
    strike: FloatArray | float = np.nan
    time_years: FloatArray | float = 0.0
    implied_vol: FloatArray | float = 0.0
    rate: FloatArray | float = 0.0
    dividend_yield: FloatArray | float = 0.0
    is_american: BoolArray | bool = False
    position_id: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        symbols = tuple(str(s) for s in self.symbols)
        spot = np.asarray(self.spot, dtype=np.float64).reshape(-1)
        if len(symbols) != spot.size or len(set(symbols)) != len(symbols):
            raise ValueError("symbols must be distinct, one spot per symbol")
        if not np.all(np.isfinite(spot)) or np.any(spot <= 0.0):
            raise ValueError("spot must be positive and finite")
        sym_idx = np.asarray(self.symbol_index).reshape(-1)
        if sym_idx.size and (
            not np.issubdtype(sym_idx.dtype, np.integer) or sym_idx.min() < 0 or sym_idx.max() >= spot.size
        ):
            raise ValueError("symbol_index must be integers indexing symbols")
        n = sym_idx.size
        quantity = np.asarray(self.quantity, dtype=np.float64).reshape(-1)
        if quantity.size != n:
            raise ValueError("quantity must have one entry per position")

        def vec(value: Any, dtype: type) -> np.ndarray:
            arr = np.asarray(value, dtype=dtype)
            if arr.ndim == 0:
                return np.full(n, arr[()], dtype=dtype)
            if arr.shape != (n,):
                raise ValueError("position fields must be scalars or one entry per position")
            return arr.copy()

        fields = {
            "multiplier": vec(self.multiplier, np.float64),
            "is_option": vec(self.is_option, np.bool_),
            "is_call": vec(self.is_call, np.bool_),
            "strike": vec(self.strike, np.float64),
            "time_years": vec(self.time_years, np.float64),
            "implied_vol": vec(self.implied_vol, np.float64),
            "rate": vec(self.rate, np.float64),
            "dividend_yield": vec(self.dividend_yield, np.float64),
            "is_american": vec(self.is_american, np.bool_),
        }
        opt = fields["is_option"]
        fields["is_american"] &= opt
        if not np.all(np.isfinite(quantity)) or not np.all(np.isfinite(fields["multiplier"])):
            raise ValueError("quantity and multiplier must be finite")
        checks = {
            "strike": (fields["strike"] > 0.0) & np.isfinite(fields["strike"]),
            "time_years": (fields["time_years"] >= 0.0) & np.isfinite(fields["time_years"]),
            "implied_vol": (fields["implied_vol"] >= 0.0) & np.isfinite(fields["implied_vol"]),
            "rate": np.isfinite(fields["rate"]),
            "dividend_yield": np.isfinite(fields["dividend_yield"]),
        }
        for name, ok in checks.items():
            if np.any(opt & ~ok):
                raise ValueError(f"option positions need a valid {name}")
        for name in ("strike", "time_years", "implied_vol", "rate", "dividend_yield"):
            fields[name] = np.where(opt, fields[name], {"strike": 1.0}.get(name, 0.0))
        pid = tuple(str(i) for i in range(n)) if self.position_id is None else tuple(map(str, self.position_id))
        if len(pid) != n:
            raise ValueError("position_id must have one entry per position")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "spot", _frozen(spot))
        object.__setattr__(self, "symbol_index", _frozen(sym_idx.astype(np.intp)))
        object.__setattr__(self, "quantity", _frozen(quantity))
        object.__setattr__(self, "position_id", pid)
        for name, arr in fields.items():
            object.__setattr__(self, name, _frozen(arr))

    # The fields are arrays after __post_init__; these aliases give type checkers the narrowed types.
    @property
    def n_positions(self) -> int:
        return int(self.symbol_index.size)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def units(self) -> FloatArray:
        """``quantity * multiplier`` per position."""
        return np.asarray(self.quantity) * np.asarray(self.multiplier)

    @property
    def position_spot(self) -> FloatArray:
        """Spot of each position's underlying."""
        return np.asarray(self.spot)[self.symbol_index]

    def symbol_position(self, symbols: Sequence[str]) -> IntArray:
        """Indices in ``self.symbols`` of the given names (KeyError for an unknown one)."""
        where = {s: i for i, s in enumerate(self.symbols)}
        return np.array([where[s] for s in symbols], dtype=np.intp)


#: The per-position fields of a Portfolio after ``quantity`` (its option terms and exercise style).
POSITION_FIELDS = (
    "multiplier",
    "is_option",
    "is_call",
    "strike",
    "time_years",
    "implied_vol",
    "rate",
    "dividend_yield",
    "is_american",
)


def concatenated(
    parts: Sequence[Portfolio],
    symbols: Sequence[str],
    spot: ArrayLike,
    symbol_index: ArrayLike,
    position_id: Sequence[str],
) -> Portfolio:
    """The positions of ``parts`` one after another (quantities and every field of ``POSITION_FIELDS``) on the
    given symbols and spots; ``symbol_index`` and ``position_id`` for the joined positions."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(p, name)) for p in parts])

    return Portfolio(
        symbols=tuple(symbols),
        spot=np.asarray(spot, dtype=np.float64),
        symbol_index=np.asarray(symbol_index),
        quantity=cat("quantity"),
        position_id=tuple(position_id),
        **{name: cat(name) for name in POSITION_FIELDS},
    )


def stack_portfolios(portfolios: Sequence[Portfolio]) -> Portfolio:
    """The books side by side as one book: book ``k``'s symbols become ``"k:<symbol>"`` (one block of columns per
    book, in order) and its positions follow those of book ``k - 1`` in their own order."""
    if not portfolios:
        raise ValueError("need at least one portfolio")
    offsets = np.cumsum([0] + [p.n_symbols for p in portfolios])
    return concatenated(
        portfolios,
        [f"{k}:{s}" for k, p in enumerate(portfolios) for s in p.symbols],
        np.concatenate([np.asarray(p.spot) for p in portfolios]),
        np.concatenate([p.symbol_index + offsets[k] for k, p in enumerate(portfolios)]),
        [f"{k}:{i}" for k, p in enumerate(portfolios) for i in (p.position_id or ())],
    )
