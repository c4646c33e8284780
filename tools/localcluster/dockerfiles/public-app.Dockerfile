# A public Flask application's published source, unchanged (the build context is the directory taken from its
# sdist, see localcluster/publicapps.py), with the pinned libraries it needs and gunicorn. Nothing of the
# operator's is in it: the in-process agent comes from the FlaskApp's own ConfigMap at run time.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG REQUIREMENTS
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir gunicorn==27.0.1 ${REQUIREMENTS}
WORKDIR /app
COPY . .
USER 10001
