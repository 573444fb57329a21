"""Hubbub's own versions of the tutorial's three pages, served at ``/tutorial/…`` and
dialling the host that served them."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.servers import ServerProcess

TIMEOUT_MS = 10_000
NewPage = Callable[[], Page]


def open_page(new_page: NewPage, server: ServerProcess, path: str) -> Page:
    page = new_page()
    page.goto(server.http(path))
    return page


def wait_open(page: Page) -> None:
    expect(page.locator("#state")).to_have_text("open", timeout=TIMEOUT_MS)


def say(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def wait_log(page: Page, lines: list[str]) -> None:
    expect(page.locator("#log li")).to_have_text(lines, timeout=TIMEOUT_MS)


def test_echo(server: ServerProcess, new_page: NewPage) -> None:
    page = open_page(new_page, server, "/tutorial/echo")
    wait_open(page)
    say(page, "hello")
    say(page, "<b>world</b>")
    wait_log(page, ["Message text was: hello", "Message text was: <b>world</b>"])
    assert page.locator("#log b").count() == 0


def test_items_with_token_and_q(server: ServerProcess, new_page: NewPage) -> None:
    page = open_page(new_page, server, "/tutorial/items")
    page.get_by_label("Item ID").fill("foo")
    page.get_by_label("Token").fill("abc&q=1")  # a token is a token, not more query
    page.get_by_label("q (optional)").fill("42")
    page.get_by_role("button", name="Connect").click()
    wait_open(page)
    say(page, "hi")
    wait_log(
        page,
        [
            "Session cookie or query token value is: abc&q=1",
            "Query parameter q is: 42",
            "Message text was: hi, for item ID: foo",
        ],
    )


def test_items_without_q_and_without_a_token(server: ServerProcess, new_page: NewPage) -> None:
    page = open_page(new_page, server, "/tutorial/items")
    page.get_by_role("button", name="Connect").click()  # the defaults: foo, some-key-token
    wait_open(page)
    say(page, "hi")
    wait_log(
        page,
        [
            "Session cookie or query token value is: some-key-token",
            "Message text was: hi, for item ID: foo",
        ],
    )
    page.get_by_label("Token").fill("")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#state")).to_have_text("closed (1006)", timeout=TIMEOUT_MS)


def test_chat_between_two_tabs(server: ServerProcess, new_page: NewPage) -> None:
    first = open_page(new_page, server, "/tutorial/chat")
    second = open_page(new_page, server, "/tutorial/chat")
    wait_open(first)
    wait_open(second)
    first_id = first.locator("#client-id").text_content()
    second_id = second.locator("#client-id").text_content()
    assert first_id and second_id and first_id != second_id

    say(first, "hi there")
    wait_log(first, ["You wrote: hi there", f"Client #{first_id} says: hi there"])
    wait_log(second, [f"Client #{first_id} says: hi there"])
    say(second, "hello back")
    wait_log(
        second,
        [
            f"Client #{first_id} says: hi there",
            "You wrote: hello back",
            f"Client #{second_id} says: hello back",
        ],
    )
    second.close()
    wait_log(
        first,
        [
            "You wrote: hi there",
            f"Client #{first_id} says: hi there",
            f"Client #{second_id} says: hello back",
            f"Client #{second_id} left the chat",
        ],
    )


def test_the_chat_page_links_to_the_tutorial_pages(
    server: ServerProcess, new_page: NewPage
) -> None:
    page = open_page(new_page, server, "/")
    for name in ("echo", "items", "chat"):
        page.locator("footer").get_by_role("link", name=name).click()
        expect(page).to_have_url(server.http(f"/tutorial/{name}"))
        expect(page.locator("h1")).to_have_text(name.capitalize())
        page.go_back()
