"""The one convention for lists in the SDK (as Trigger.dev's page promises).

Every ``list`` call (``runs.list``, ``schedules.list``, ``queues.list``, ``wait.list_tokens``)
returns a :class:`PageList`:

* ``page = await runs.list(...)`` — the first page: ``page.data`` (the items, also reachable
  by iterating, ``len`` and indexing the page itself), ``page.has_next_page`` and
  ``await page.next_page()``;
* ``async for run in runs.list(...)`` — every item, page after page;
* ``async for page in runs.list(...).pages()`` — page by page.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: fetches one page given the position returned with the previous one (None: the first)
Fetch = Callable[[Any], Awaitable["Page[Any]"]]


@dataclass
class Page(Generic[T]):
    """One page of a list; iterating it yields its items."""

    data: list[T]
    #: where the next page starts (a cursor or a page number); None on the last page
    next: Any = None
    _fetch: Fetch | None = field(default=None, repr=False, compare=False)

    @property
    def has_next_page(self) -> bool:
        return self.next is not None

    async def next_page(self) -> Page[T] | None:
        """The following page, or None after the last one."""
        if self.next is None or self._fetch is None:
            return None
        return await self._fetch(self.next)

    def __iter__(self) -> Iterator[T]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> T:
        return self.data[index]


class PageList(Generic[T]):
    """Awaitable (the first page) and async-iterable (every item across pages)."""

    def __init__(self, fetch: Callable[[Any], Awaitable[Page[T]]], start: object = None,
                 limit: int | None = None) -> None:
        self._fetch = fetch
        self._start = start
        self._limit = limit

    async def _page(self, position: object) -> Page[T]:
        page = await self._fetch(position)
        page._fetch = self._page
        return page

    def __await__(self) -> Generator[Any, None, Page[T]]:
        return self._first().__await__()

    async def _first(self) -> Page[T]:
        page = await self._page(self._start)
        if self._limit is not None and len(page.data) >= self._limit:
            page.data, page.next = page.data[: self._limit], None
        return page

    async def pages(self) -> AsyncGenerator[Page[T], None]:
        position, remaining = self._start, self._limit
        while True:
            page = await self._page(position)
            if remaining is not None:
                page.data = page.data[:remaining]
                remaining -= len(page.data)
                if remaining <= 0:
                    page.next = None
            yield page
            if page.next is None or not page.data:
                return
            position = page.next

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.data:
                yield item
