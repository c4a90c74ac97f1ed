# poolgate's image. A HuggingFace Docker Space builds it from the repository root (README.md's front matter
# says `sdk: docker`, `app_port: 7860`); Railway (railway.json) and Docker Compose (deploy/compose/) build it too.
# deploy/huggingface/Dockerfile is this same file (a test keeps the two equal).
FROM python:3.11-slim

# Nothing is written at run time: no bytecode, no pip cache; the code lives in site-packages, owned by root.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# HuggingFace Spaces run the container as uid 1000; so does everything else here.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app
COPY . .
RUN pip install .

USER user
# PORT: 7860 is where a Space sends traffic; Railway and Render set their own PORT, which wins.
ENV PORT=7860 GATEKEEPER=proxy_key
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '7860'), timeout=4)"
CMD ["poolgate", "serve"]
