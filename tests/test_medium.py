"""Medium export -> one clean .txt per story: exact text for every element kind, drafts and
responses, the report, the zip and folder forms, bad input in one line, and data=medium."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from article_gpt.data.medium import import_medium, parse_story
from article_gpt.data.tokenizer import get_encoding
from article_gpt.errors import DataError

PAGE = """<!DOCTYPE html>
<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"><title>{title}</title>
<style>* {{ font-family: Georgia; }}</style></head>
<body><nav><a href="https://medium.com/">Home</a> <a href="https://medium.com/me">Profile</a></nav>
<article class="h-entry">
<header><h1 class="p-name">{title}</h1></header>
{subtitle}
<section data-field="body" class="e-content">
<section name="a1b2" class="section section--body section--first section--last">
<div class="section-divider"><hr class="section-divider"></div>
<div class="section-content"><div class="section-inner sectionLayout--insetColumn">
{body}
</div></div></section>
</section>
<footer><p>By <a href="https://medium.com/@ada" class="p-author h-card">Ada Writer</a> on
<a href="https://medium.com/p/1a2b3c4d5e6f"><time class="dt-published" datetime="2021-03-04T10:00:00.000Z">March 4,
2021</time></a>.</p>
<p><a href="https://medium.com/@ada/gradient-descent-by-hand-1a2b3c4d5e6f" class="p-canonical">Canonical link</a></p>
<p>Exported from <a href="https://medium.com">Medium</a> on May 1, 2024.</p></footer>
</article></body></html>
"""

FULL_BODY = """
<h3 name="t1" id="t1" class="graf graf--h3 graf--leading graf--title">Gradient Descent by Hand</h3>
<h4 name="s1" id="s1" class="graf graf--h4 graf-after--h3 graf--subtitle">Walking downhill, one step at a time</h4>
<figure name="f1" id="f1" class="graf graf--figure graf-after--h4">
<img class="graf-image" data-image-id="1*abc.png" data-width="800" src="https://cdn-images-1.medium.com/max/800/1*abc.png">
<figcaption class="imageCaption">A loss surface (photo by <a href="https://x.org">someone</a>)</figcaption></figure>
<p name="p1" id="p1" class="graf graf--p graf-after--figure">The loss is a <strong class="markup--strong
markup--p-strong">landscape</strong>, and the gradient points
   <em class="markup--em markup--p-em">uphill</em>; see <a href="https://en.wikipedia.org/wiki/Gradient"
class="markup--anchor markup--p-anchor">the gradient</a>&nbsp;&amp; its sign.</p>
<h3 name="h1" id="h1" class="graf graf--h3 graf-after--p">The update rule</h3>
<p name="p2" id="p2" class="graf graf--p graf-after--h3">Take a step against it:<br>small steps first,<br>then
larger.</p>
<pre name="c1" id="c1" class="graf graf--pre graf-after--p">for step in range(100):
    w -= lr * grad(w)<br>print(w)</pre>
<blockquote name="q1" id="q1" class="graf graf--blockquote graf-after--pre">A small learning rate is
<em class="markup--em markup--blockquote-em">patient</em>, not slow.</blockquote>
<h4 name="h2" id="h2" class="graf graf--h4 graf-after--blockquote">What can go wrong</h4>
<ul class="postList"><li name="l1" id="l1" class="graf graf--li graf-after--h4">Too large: it
<strong class="markup--strong markup--li-strong">diverges</strong>.</li>
<li name="l2" id="l2" class="graf graf--li graf-after--li">Too small: it crawls.</li></ul>
<figure name="e1" id="e1" class="graf graf--figure graf--iframe graf-after--li">
<iframe src="https://www.youtube.com/embed/xyz" width="700" height="393" frameborder="0"></iframe>
<figcaption class="imageCaption">A video about it</figcaption></figure>
<ol class="postList"><li name="o1" id="o1" class="graf graf--li graf-after--figure">Compute the gradient.</li>
<li name="o2" id="o2" class="graf graf--li graf-after--li">Step.</li>
<li name="o3" id="o3" class="graf graf--li graf-after--li">Repeat.</li></ol>
<blockquote name="q2" id="q2" class="graf graf--pullquote graf-after--li">Downhill is a direction,
not a place.</blockquote>
<div name="m1" id="m1" class="graf graf--mixtapeEmbed graf-after--pullquote">
<a href="https://medium.com/@ada/momentum" class="markup--anchor markup--mixtapeEmbed-anchor"><strong
class="markup--strong markup--mixtapeEmbed-strong">Momentum, explained</strong><br><em
class="markup--em markup--mixtapeEmbed-em">My next story</em>medium.com</a>
<a href="https://medium.com/@ada/momentum" class="js-mixtapeImage mixtapeImage"></a></div>
<hr class="section-divider">
<p name="p3" id="p3" class="graf graf--p graf-after--mixtapeEmbed graf--trailing">That is all there is to it.</p>
"""

FULL_TEXT = """Gradient Descent by Hand

Walking downhill, one step at a time

The loss is a landscape, and the gradient points uphill; see the gradient & its sign.

The update rule

Take a step against it:
small steps first,
then larger.

for step in range(100):
    w -= lr * grad(w)
print(w)

A small learning rate is patient, not slow.

What can go wrong

- Too large: it diverges.
- Too small: it crawls.

1. Compute the gradient.
2. Step.
3. Repeat.

Downhill is a direction, not a place.

That is all there is to it.
"""

SUBTITLE = '<section data-field="subtitle" class="p-summary">Walking downhill, one step at…</section>'


def page(title: str, body: str, subtitle: str = "") -> str:
    return PAGE.format(title=title, body=body, subtitle=subtitle)


def simple(title: str, *paragraphs: str, title_heading: bool = True) -> str:
    head = f'<h3 class="graf graf--h3 graf--leading graf--title">{title}</h3>' if title_heading else ""
    return page(title, head + "".join(f'<p class="graf graf--p">{p}</p>' for p in paragraphs))


STORIES = {
    "posts/2021-03-04_Gradient-Descent-by-Hand-1a2b3c4d5e6f.html": page("Gradient Descent by Hand", FULL_BODY,
                                                                       SUBTITLE),
    "posts/2021-04-01_Second-Story-ffeeddccbbaa.html": simple("Second Story", "Short, but a story."),
    "posts/draft_Unfinished-Thoughts-0f9e8d7c6b5a.html": simple("Unfinished Thoughts", "Not ready yet."),
    # A response: no title heading, and Medium titles it with its own opening words.
    "posts/2021-05-06_Great-point-about-momentum-aa11bb22cc33.html": simple(
        "Great point about momentum…", "Great point about momentum, it also damps the oscillations.",
        title_heading=False),
}


@pytest.fixture
def export_dir(tmp_path):
    root = tmp_path / "medium-export"
    for name, html in STORIES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(html, encoding="utf-8")
    (root / "profile").mkdir()
    (root / "profile" / "profile.html").write_text("<html><body>Ada</body></html>")
    return root


@pytest.fixture
def export_zip(tmp_path, export_dir):
    path = tmp_path / "medium-export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(export_dir.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(export_dir).as_posix())
    return path


def import_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_medium.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_every_element_kind_extracted_exactly():
    name = "posts/2021-03-04_Gradient-Descent-by-Hand-1a2b3c4d5e6f.html"
    story = parse_story(name, STORIES[name])
    assert story.text == FULL_TEXT
    assert (story.name, story.title, story.kind) == ("2021-03-04_Gradient-Descent-by-Hand.txt",
                                                     "Gradient Descent by Hand", "story")
    assert story.words == len(FULL_TEXT.split())


def test_cli_imports_stories_and_reports(export_zip, tmp_path):
    out = tmp_path / "articles"
    proc = import_cli(export_zip, "--out", out)
    assert sorted(p.name for p in out.iterdir()) == ["2021-03-04_Gradient-Descent-by-Hand.txt",
                                                      "2021-04-01_Second-Story.txt"]
    assert (out / "2021-03-04_Gradient-Descent-by-Hand.txt").read_text(encoding="utf-8") == FULL_TEXT
    assert (out / "2021-04-01_Second-Story.txt").read_text(encoding="utf-8") == "Second Story\n\nShort, but a story.\n"
    words = len(FULL_TEXT.split())
    assert proc.stdout.splitlines() == [
        f"imported  2021-03-04_Gradient-Descent-by-Hand.txt  ({words} words)",
        "imported  2021-04-01_Second-Story.txt  (6 words)",
        "skipped   posts/2021-05-06_Great-point-about-momentum-aa11bb22cc33.html  (13 words): "
        "a response (--include-responses imports it)",
        "skipped   posts/draft_Unfinished-Thoughts-0f9e8d7c6b5a.html  (5 words): a draft (--include-drafts imports it)",
        f"2 stories imported ({words + 6} words) into {out}; skipped 1 drafts, 1 responses, 0 without text",
    ]


def test_drafts_and_responses_on_request_and_folder_equals_zip(export_dir, export_zip, tmp_path):
    from_dir = import_medium(export_dir, tmp_path / "a", include_drafts=True, include_responses=True)
    from_zip = import_medium(export_zip, tmp_path / "b", include_drafts=True, include_responses=True)
    assert [(s.name, s.kind) for s in from_dir.imported] == [
        ("2021-03-04_Gradient-Descent-by-Hand.txt", "story"), ("2021-04-01_Second-Story.txt", "story"),
        ("2021-05-06_Great-point-about-momentum.txt", "response"), ("draft_Unfinished-Thoughts.txt", "draft")]
    assert [s.text for s in from_dir.imported] == [s.text for s in from_zip.imported]
    assert (tmp_path / "a" / "draft_Unfinished-Thoughts.txt").read_text() == "Unfinished Thoughts\n\nNot ready yet.\n"
    assert from_dir.skipped == []


def test_medium_data_config_splits_by_article(export_dir, tmp_path):
    out = tmp_path / "articles"
    import_medium(export_dir, out, include_drafts=True, include_responses=True)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=medium", f"data.train.path={out}", "model.block_size=4",
                                          f"paths.log_dir={tmp_path / 'outputs'}", "data.val_fraction=0.5"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    enc = get_encoding("gpt2")
    texts = [p.read_text(encoding="utf-8") for p in sorted(out.iterdir())]
    # Half the tokens would cut inside the long first story (the nearest boundary lies farther than
    # half the validation size, where data=split alone cuts mid-story); whole_documents keeps the
    # validation split to the last stories, whole.
    assert dm.train_ids.tolist() == enc.encode_ordinary(texts[0])
    assert dm.val_ids.tolist() == enc.encode_ordinary(texts[1]) + [enc.eot_token] + enc.encode_ordinary(
        texts[2]) + [enc.eot_token] + enc.encode_ordinary(texts[3])


@pytest.mark.parametrize("case", ["not_zip", "no_posts", "no_body", "not_utf8", "missing"])
def test_bad_input_is_one_line(case, tmp_path, export_dir):
    out = tmp_path / "out"
    if case == "not_zip":
        arg = tmp_path / "export.zip"
        arg.write_text("not a zip")
        expected = f"error: {arg}: not a zip file (pass Medium's export .zip or the folder it unpacks to)"
    elif case == "no_posts":
        arg = tmp_path / "empty.zip"
        with zipfile.ZipFile(arg, "w") as zf:
            zf.writestr("profile/profile.html", "<html></html>")
        expected = f"error: {arg}: no posts/*.html inside (Medium's export holds them in posts/)"
    elif case == "no_body":
        (export_dir / "posts" / "2021-06-01_Broken-123456789abc.html").write_text(
            "<html><body><h1 class='p-name'>Broken</h1><p>no body section</p></body></html>")
        arg = export_dir
        expected = ('error: posts/2021-06-01_Broken-123456789abc.html: no <section data-field="body">: '
                    "not a Medium story")
    elif case == "not_utf8":
        (export_dir / "posts" / "2021-06-02_Latin-123456789abc.html").write_bytes(b"<html>caf\xe9</html>")
        arg = export_dir
        expected = "error: posts/2021-06-02_Latin-123456789abc.html: not UTF-8 (byte 9); Medium exports UTF-8 HTML"
    else:
        arg = tmp_path / "nowhere.zip"
        expected = f"error: {arg}: no such file or folder"
    proc = import_cli(arg, "--out", out, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [expected]
    assert not out.exists()  # every story is parsed before anything is written


def test_story_without_text_is_skipped_not_fatal(tmp_path):
    story = parse_story("posts/2021-07-01_Pictures-abcdefabcdef.html",
                        page("Pictures", '<figure class="graf graf--figure"><img src="x.png"></figure>'))
    assert story.text == "" and story.words == 0
    with pytest.raises(DataError, match="not a Medium story"):
        parse_story("posts/x.html", "<html><body><p>Hello</p></body></html>")

