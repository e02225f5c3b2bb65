# harbormaster as a container: mount the Docker socket and point it at a registry.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY bin ./bin
COPY templates ./templates
RUN npm ci && npm prune --omit=dev && npm cache clean --force
ENTRYPOINT ["node", "/app/bin/harbormaster.js"]
CMD ["--help"]
