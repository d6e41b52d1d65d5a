// Swagger UI on the service's own OpenAPI document; "Authorize" takes an X-API-Key.
window.ui = SwaggerUIBundle({
  url: "api/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: false,
});
