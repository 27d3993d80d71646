FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --require-hashes -r requirements.txt
COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput -v 0
RUN useradd --create-home tradesense && mkdir -p /app/var && chown -R tradesense /app/var
USER tradesense
EXPOSE 8000
CMD ["uvicorn", "tradesense.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--lifespan", "off"]
