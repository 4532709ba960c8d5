"""The app's API as an MCP server (``--mcp``), driven by a real MCP client (the ``mcp`` package)."""

from __future__ import annotations

import ast
import asyncio
import base64

import pytest

from tests.support.servers import served_demo

pytestmark = pytest.mark.integration


async def _tools_and_search(url: str, image: str, k: int):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with (
        streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        result = await session.call_tool("find_similar_images", {"image": image, "k": k})
        return tools, result


def test_an_assistant_lists_the_search_tool_and_gets_the_same_hits_as_search(searcher, small_index_dir):
    from gradio_client import Client, handle_file

    query = searcher.index.records()[7].path
    with open(query, "rb") as f:
        data_url = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()
    with served_demo(searcher, k=4, artifacts=small_index_dir, mcp=True) as url:
        tools, result = asyncio.run(_tools_and_search(url, data_url, 4))
        _, expected, _ = Client(url, verbose=False).predict(handle_file(query), 4, api_name="/search")
    tool = tools["find_similar_images"]
    assert "look most like" in tool.description and "no_good_match" in tool.description
    assert {"image", "k", "collapse"} <= set(tool.inputSchema["properties"])
    assert "explain" in tools and "feedback" in tools
    assert not result.isError, result.content
    # Gradio hands the endpoint's three outputs (images, results, status) back as one text: their Python repr.
    (text,) = [c.text for c in result.content if getattr(c, "type", "") == "text"]
    _, payload, status = ast.literal_eval(text)
    assert "4 results" in status
    assert [h["id"] for h in payload["hits"]] == [h["id"] for h in expected["hits"]]
    assert [h["score"] for h in payload["hits"]] == pytest.approx([h["score"] for h in expected["hits"]], abs=1e-5)
